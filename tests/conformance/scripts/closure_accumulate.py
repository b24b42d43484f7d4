"""Idiom 11: Lightning-style accumulate_grad_batches=2 with a closure: the first micro-batch's
backward runs before optimizer.step(closure), the second inside the closure."""

import reference as ref
import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(21)
torch.set_default_dtype(torch.float64)
model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
accumulate_grad_batches = 2
batches = [(torch.randn(4, 6), torch.randint(0, 3, (4,))) for _ in range(8)]
log = ref.Reference(per_sample_scale=8.0)  # 4 samples, loss / 2


def micro_loss(m, j, x, y):
    return F.cross_entropy(ref.spliced(m, ref.split(x), j), y) / accumulate_grad_batches


def training_step(batch):
    x, y = batch
    return F.cross_entropy(model(x), y)


def make_closure(batch):
    def closure():
        loss = training_step(batch) / accumulate_grad_batches
        loss.backward()
        x, y = batch
        log.backward(loss.item(), model, micro_loss, x, y)
        return loss

    return closure


for batch_idx, batch in enumerate(batches):
    closure = make_closure(batch)
    if (batch_idx + 1) % accumulate_grad_batches != 0:
        closure()  # accumulating: no optimizer step
        continue
    optimizer.step(closure=closure)
    optimizer.zero_grad()
    log.step()
    print(f"step {batch_idx // accumulate_grad_batches} loss {log.steps[-1]['loss']!r}")
log.dump()
