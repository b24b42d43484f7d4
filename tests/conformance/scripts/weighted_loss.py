"""Extra idiom: per-sample weights, reduction="none" then a weighted mean (class balancing)."""

import reference as ref
import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(13)
torch.set_default_dtype(torch.float64)
model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
class_weight = torch.tensor([0.2, 1.0, 3.0])
batches = [(torch.randn(8, 6), torch.randint(0, 3, (8,))) for _ in range(4)]
log = ref.Reference()


def weighted(logits, y):
    losses = F.cross_entropy(logits, y, reduction="none")
    w = class_weight[y]
    return (losses * w).sum() / w.sum()


for step, (x, y) in enumerate(batches):
    optimizer.zero_grad()
    loss = weighted(model(x), y)
    loss.backward()
    log.backward(loss.item(), model, ref.per_sample(weighted), x, y)
    optimizer.step()
    log.step()
    print(f"step {step} loss {loss.item()!r}")
log.dump()
