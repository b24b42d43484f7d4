"""Idiom 13a: a BatchNorm model trained, then switched to eval() for a validation loop (written
without torch.no_grad(), as often seen). Only the head's c_j is defined (downstream of the
batch statistics); BatchNorm in train mode couples samples."""

import reference as ref
import torch
import torch.nn.functional as F
from torch import nn


def loss_of(m, j, x, y):
    features = m[:3](x).detach()  # train-mode batch statistics, as in the training forward
    return F.cross_entropy(ref.spliced(m[3], ref.split(features), j), y)


torch.manual_seed(23)
torch.set_default_dtype(torch.float64)
model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
batches = [(torch.randn(8, 6), torch.randint(0, 3, (8,))) for _ in range(3)]
validation = [(torch.randn(8, 6), torch.randint(0, 3, (8,))) for _ in range(2)]
log = ref.Reference(per_sample_scale=8.0)

model.train()
for step, (x, y) in enumerate(batches):
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    log.backward(loss.item(), model, loss_of, x, y, layers_only=["3"])
    optimizer.step()
    log.step()
    print(f"step {step} loss {loss.item()!r}")

model.eval()
val_loss = sum(F.cross_entropy(model(x), y).item() for x, y in validation) / len(validation)
print(f"validation loss {val_loss!r}")
log.dump()
