"""Idiom 4a: torch.amp.GradScaler("cpu") with torch.autocast("cpu", dtype=torch.bfloat16)."""

import reference as ref
import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(8)
model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
scaler = torch.amp.GradScaler("cpu")
batches = [(torch.randn(8, 6), torch.randint(0, 3, (8,))) for _ in range(4)]
# bfloat16 keeps ~3 digits: the one-sample-at-a-time loop rounds differently from the batch
log = ref.Reference(per_sample_scale=8.0, rtol=3e-2)


def loss_of(m, j, x, y):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return F.cross_entropy(ref.spliced(m, ref.split(x), j), y)


for step, (x, y) in enumerate(batches):
    optimizer.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(x)
        loss = F.cross_entropy(output, y)
    scaler.scale(loss).backward()
    log.backward(loss.item(), model, loss_of, x, y)
    scaler.step(optimizer)
    scaler.update()
    log.step()
    print(f"step {step} loss {loss.item()!r} scale {scaler.get_scale()!r}")
log.dump()
