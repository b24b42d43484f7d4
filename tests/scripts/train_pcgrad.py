"""Manual PCGrad on two losses of one forward: backward twice on a retained graph."""

import torch
from torch import nn
from torch.nn import functional as F

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
params = list(model.parameters())
for step in range(3):
    x, y, target = torch.randn(10, 6), torch.randint(0, 3, (10,)), torch.randn(10)
    out = model(x)
    l1 = F.cross_entropy(out[:, :3], y)
    l2 = F.mse_loss(out[:, 3], target)
    optimizer.zero_grad()
    l1.backward(retain_graph=True)
    g1 = [p.grad.clone() for p in params]
    optimizer.zero_grad()
    l2.backward()
    g2 = [p.grad.clone() for p in params]
    dot = sum((a * b).sum() for a, b in zip(g1, g2))
    if dot < 0:  # project g1 off g2
        norm = sum((b * b).sum() for b in g2)
        g1 = [a - dot / norm * b for a, b in zip(g1, g2)]
    for p, a, b in zip(params, g1, g2):
        p.grad = a + b
    optimizer.step()
    print(f"step {step} losses {l1.item()!r} {l2.item()!r}")
