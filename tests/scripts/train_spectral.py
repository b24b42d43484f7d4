"""A discriminator-style MLP with spectral_norm and weight_norm parametrizations."""

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

torch.manual_seed(0)
model = nn.Sequential(
    spectral_norm(nn.Linear(8, 16)),
    nn.LeakyReLU(0.2),
    weight_norm(nn.Linear(16, 16)),
    nn.LeakyReLU(0.2),
    nn.Linear(16, 1),
)
optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999))
for step in range(4):
    real = torch.randn(24, 8) + 1
    optimizer.zero_grad()
    loss = F.softplus(-model(real)).mean()
    loss.backward()
    optimizer.step()
    print(f"step {step} loss {loss.item()!r}")
