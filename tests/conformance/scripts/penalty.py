"""Idiom 5c: a mean loss plus a per-sample sum penalty; argv[1] is "reg+ce" or "ce+reg"."""

import sys

import reference as ref
import torch
import torch.nn.functional as F
from torch import nn

order = sys.argv[1]
torch.manual_seed(12)
torch.set_default_dtype(torch.float64)
model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
batches = [(torch.randn(8, 6), torch.randint(0, 3, (8,))) for _ in range(4)]
log = ref.Reference()


def objective(logits, y):
    ce = F.cross_entropy(logits, y)
    reg = 1e-2 * logits.pow(2).sum()  # logit penalty, summed over the batch
    return reg + ce if order == "reg+ce" else ce + reg


for step, (x, y) in enumerate(batches):
    optimizer.zero_grad()
    loss = objective(model(x), y)
    loss.backward()
    log.backward(loss.item(), model, ref.per_sample(objective), x, y)
    optimizer.step()
    log.step()
    print(f"step {step} loss {loss.item()!r}")
log.dump()
