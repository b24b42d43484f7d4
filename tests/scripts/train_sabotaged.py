"""Breaks a gradscope internal (as a bug would) when GS_SABOTAGE is set; training must go on."""

import os

import torch
from torch import nn

if os.environ.get("GS_SABOTAGE"):
    import gradscope.record.scalars as scalars

    def broken(*args, **kwargs):
        raise RuntimeError("planted failure")

    scalars.grad_norms = broken

torch.manual_seed(7)
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(16, 4), torch.randn(16, 1)
for step in range(4):
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    optimizer.step()
    print(f"step {step} loss {loss.item()!r}")
