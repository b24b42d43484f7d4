"""A classifier with an input-gradient penalty (WGAN-GP / double backpropagation style)."""

import torch
from torch import nn
from torch.nn import functional as F

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
lam = 0.5
for step in range(3):
    x = torch.randn(12, 6, requires_grad=True)
    y = torch.randint(0, 3, (12,))
    optimizer.zero_grad()
    out = model(x)
    ce = F.cross_entropy(out, y)
    grad = torch.autograd.grad(out.sum(), x, create_graph=True)[0]
    loss = ce + lam * ((grad.norm(2, dim=1) - 1) ** 2).mean()
    loss.backward()
    optimizer.step()
    print(f"step {step} loss {loss.item()!r}")
