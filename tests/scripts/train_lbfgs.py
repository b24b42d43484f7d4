"""LBFGS with a closure that calls backward several times per step."""

import torch
from reflog import RefLog, seeded
from torch import nn

seeded(3)
model = nn.Linear(4, 1)
optimizer = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=4)
log = RefLog(model.named_parameters())
x, y = torch.randn(20, 4), torch.randn(20, 1)
first = {}


def closure():
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    if "loss" not in first:  # the step's first evaluation: what the step starts from
        first["loss"] = loss.item()
        log.before_update(loss)
    return loss


for step in range(3):
    first.clear()
    optimizer.step(closure)
    log.after_update()
    print(f"step {step} loss {first['loss']!r}")
log.dump()
