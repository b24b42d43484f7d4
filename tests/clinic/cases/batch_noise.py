"""Batch far above the noise scale: full-batch steps of 2048 samples on a low-noise
regression whose simple noise scale B_simple is a few tens of samples, so each step's
gradient is already nearly exact and most of the batch is wasted compute (McCandlish et
al. 2018).

Healthy twin: mini-batches of 64, within a factor 10 of B_simple.
"""

import torch
from _common import parse, seeded
from torch import nn

args = parse(__doc__, steps=30)
generator = seeded(0)
samples, features = 2048, 16
batch = 64 if args.healthy else samples
x = torch.randn(samples, features, generator=generator)
y = torch.tanh(x @ torch.randn(features, generator=generator) / 4) + 0.05 * torch.randn(
    samples, generator=generator
)
model = nn.Sequential(nn.Linear(features, 32), nn.Tanh(), nn.Linear(32, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
for _step in range(args.steps):
    index = torch.randperm(samples, generator=generator)[:batch]
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(x[index]).squeeze(1), y[index])
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.4f}")
