"""Idiom 1: no optimizer, weights updated through .data after each backward."""

import reference as ref
import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(3)
torch.set_default_dtype(torch.float64)
model = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 1))
learning_rate = 0.05
batches = [(torch.randn(8, 5), torch.randn(8, 1)) for _ in range(4)]
log = ref.Reference(per_sample_scale=8.0)

for step, (x, y) in enumerate(batches):
    model.zero_grad()
    loss = F.mse_loss(model(x), y)
    loss.backward()
    log.backward(loss.item(), model, ref.per_sample(F.mse_loss), x, y)
    for p in model.parameters():
        p.data.add_(p.grad, alpha=-learning_rate)
    log.step()
    print(f"step {step} loss {loss.item()!r}")
log.dump()
