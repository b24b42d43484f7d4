"""Gradient accumulation: 4 micro-batches of 8 per SGD-with-momentum step."""

import torch
from reflog import RefLog, seeded
from torch import nn

seeded(2)
model = nn.Sequential(nn.Linear(5, 12), nn.GELU(), nn.Linear(12, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
log = RefLog(model.named_parameters())
x, y = torch.randn(32, 5), torch.randint(0, 3, (32,))
for step in range(4):
    optimizer.zero_grad()
    total = 0.0
    for micro in range(4):
        part = slice(8 * micro, 8 * micro + 8)
        loss = nn.functional.cross_entropy(model(x[part]), y[part]) / 4
        loss.backward()
        total += loss.item()
    log.before_update(total)
    optimizer.step()
    log.after_update()
    print(f"step {step} loss {total!r}")
log.dump()
