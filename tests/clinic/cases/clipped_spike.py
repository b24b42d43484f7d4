"""A gradient spike hidden by clipping: an MLP classifier trained with
``clip_grad_norm_(model.parameters(), 0.5)`` as transformer recipes do; at step 25 one
batch arrives with its inputs scaled by 1000 (a corrupted shard), so its gradient norm
before clipping is thousands of times the usual, while the norm the optimizer sees is
0.5, as on every clipped step.

Healthy twin: the same run without the corrupted batch.
"""

import torch
from _common import parse, seeded
from torch import nn

args = parse(__doc__, steps=40)
generator = seeded(0)
samples, features, classes = 512, 20, 4
x = torch.randn(samples, features, generator=generator)
y = (x[:, :classes] + 0.5 * torch.randn(samples, classes, generator=generator)).argmax(1)
model = nn.Sequential(nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, classes))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
for step in range(args.steps):
    index = torch.randint(0, samples, (32,), generator=generator)
    inputs = x[index] * (1000.0 if step == 25 and not args.healthy else 1.0)
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(inputs), y[index])
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
    optimizer.step()
    if step == 25:
        print(f"step 25: loss {loss.item():.4g}, gradient norm before clipping {norm.item():.4g}")
