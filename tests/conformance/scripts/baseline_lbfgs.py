"""Baseline: LBFGS with a closure; the step's loss and contributions are the first evaluation's."""

import reference as ref
import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(2)
torch.set_default_dtype(torch.float64)
model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
optimizer = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=3)
x, y = torch.randn(10, 4), torch.randn(10, 1)
log = ref.Reference(per_sample_scale=10.0)


def closure():
    optimizer.zero_grad()
    loss = F.mse_loss(model(x), y)
    loss.backward()
    if not first:  # the first evaluation: the weights the step starts from
        log.backward(loss.item(), model, ref.per_sample(F.mse_loss), x, y)
        first.append(loss.item())
    else:
        log.backward(loss.item())
    return loss


for step in range(3):
    first = []
    optimizer.step(closure)
    log.step(loss=first[0])
    print(f"step {step} loss {first[0]!r} evaluations {log.steps[-1]['backwards']}")
log.dump()
