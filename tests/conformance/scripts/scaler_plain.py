"""Idiom 4b: torch.amp.GradScaler("cpu") without autocast (float64, so exact)."""

import reference as ref
import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(9)
torch.set_default_dtype(torch.float64)
model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
batches = [(torch.randn(8, 6), torch.randint(0, 3, (8,))) for _ in range(4)]
log = ref.Reference(per_sample_scale=8.0)

for step, (x, y) in enumerate(batches):
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    scaler.scale(loss).backward()
    log.backward(loss.item(), model, ref.per_sample(F.cross_entropy), x, y)
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
    log.step()
    print(f"step {step} loss {loss.item()!r} scale {scaler.get_scale()!r}")
log.dump()
