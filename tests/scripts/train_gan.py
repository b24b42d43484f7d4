"""Two models, two optimizers (a GAN-shaped loop): each optimizer step is a step."""

import torch
from torch import nn

torch.manual_seed(6)
generator = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
critic = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1))
opt_g = torch.optim.Adam(generator.parameters(), lr=1e-3)
opt_c = torch.optim.Adam(critic.parameters(), lr=1e-3)
real = torch.randn(16, 2) + 3
for step in range(3):
    opt_c.zero_grad()
    fake = generator(torch.randn(16, 4)).detach()
    loss_c = critic(fake).mean() - critic(real).mean()
    loss_c.backward()
    opt_c.step()
    opt_g.zero_grad()
    loss_g = -critic(generator(torch.randn(16, 4))).mean()
    loss_g.backward()
    opt_g.step()
    print(f"step {step} critic {loss_c.item()!r} generator {loss_g.item()!r}")
