"""Hand-written SGD: no optimizer, weights updated in place after each backward."""

import torch
from reflog import RefLog, seeded
from torch import nn

seeded(1)
model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 1))
log = RefLog(model.named_parameters())
x, y = torch.randn(32, 6), torch.randn(32, 1)
for step in range(5):
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    log.before_update(loss)
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.1 * p.grad
            p.grad = None
    log.after_update()
    print(f"step {step} loss {loss.item()!r}")
log.dump()
