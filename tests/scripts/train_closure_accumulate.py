"""Lightning's accumulate_grad_batches=2 shape: the first micro-batch's backward runs
before optimizer.step(closure), the second inside the closure."""

import torch
import torch.nn.functional as F
from reflog import RefLog, seeded
from torch import nn

seeded(6)
model = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
log = RefLog(model.named_parameters())
batches = [(torch.randn(6, 5), torch.randn(6, 1)) for _ in range(6)]


def training_step(batch):
    x, y = batch
    return F.mse_loss(model(x), y) / 2


for step in range(3):
    total = 0.0
    loss = training_step(batches[2 * step])
    loss.backward()
    total += loss.item()

    def closure(batch=batches[2 * step + 1]):
        global total
        loss = training_step(batch)
        loss.backward()
        total += loss.item()
        log.before_update(total)
        return loss

    optimizer.step(closure)
    log.after_update()
    optimizer.zero_grad()
    print(f"step {step} loss {total!r}")
log.dump()
