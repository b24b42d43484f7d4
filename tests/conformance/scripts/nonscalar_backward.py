"""Extra idiom: backward on the per-sample loss vector with per-sample weights as the
gradient (`losses.backward(weights)`), no scalar loss at all. The step's loss is not
asserted (docs: NaN when the root is not a scalar); the contributions are."""

import reference as ref
import torch
import torch.nn.functional as F
from torch import nn


def weighted_sum(m, j, x, y, weights):
    return (F.cross_entropy(ref.spliced(m, ref.split(x), j), y, reduction="none") * weights).sum()


torch.manual_seed(27)
torch.set_default_dtype(torch.float64)
model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
batches = [(torch.randn(8, 6), torch.randint(0, 3, (8,))) for _ in range(4)]
log = ref.Reference()

for step, (x, y) in enumerate(batches):
    optimizer.zero_grad()
    losses = F.cross_entropy(model(x), y, reduction="none")
    weights = torch.linspace(0.5, 1.5, len(x)) / len(x)  # e.g. a curriculum's sample weights
    losses.backward(weights)
    log.backward((losses.detach() * weights).sum().item(), model, weighted_sum, x, y, weights)
    optimizer.step()
    log.step(loss=float("nan"))
    print(f"step {step} mean loss {losses.mean().item()!r}")
log.dump()
