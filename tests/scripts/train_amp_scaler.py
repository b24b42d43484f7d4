"""GradScaler on CPU; step 2's loss is made infinite so the scaler skips that step."""

import torch
from reflog import RefLog, seeded
from torch import nn

seeded(4)
model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
log = RefLog(model.named_parameters())
x, y = torch.randn(16, 6), torch.randint(0, 2, (16,))
for step in range(5):
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    if step == 2:
        loss = loss * float("inf")
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    finite = all(torch.isfinite(p.grad).all() for p in model.parameters())
    log.before_update(loss, skipped=not finite)
    scaler.step(optimizer)
    scaler.update()
    log.after_update()
    print(f"step {step} loss {loss.item()!r} scale {scaler.get_scale()!r}")
log.dump()
