"""Idiom 2a: torch.compile(backend="eager") on one nn.Linear."""

import reference as ref
import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(4)
torch.set_default_dtype(torch.float64)
model = nn.Linear(6, 3)
compiled = torch.compile(model, backend="eager")
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
batches = [(torch.randn(8, 6), torch.randint(0, 3, (8,))) for _ in range(4)]
log = ref.Reference(per_sample_scale=8.0)

for step, (x, y) in enumerate(batches):
    optimizer.zero_grad()
    loss = F.cross_entropy(compiled(x), y)
    loss.backward()
    # the reference runs the eager module: same weights, same math
    log.backward(loss.item(), model, ref.per_sample(F.cross_entropy), x, y)
    optimizer.step()
    log.step()
    print(f"step {step} loss {loss.item()!r}")
log.dump()
