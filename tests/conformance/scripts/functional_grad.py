"""Extra idiom: no backward() at all: torch.autograd.grad and an in-place update (functorch /
MAML-style code). Each autograd.grad + update is a step."""

import reference as ref
import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(25)
torch.set_default_dtype(torch.float64)
model = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 1))
batches = [(torch.randn(8, 5), torch.randn(8, 1)) for _ in range(4)]
# a recorder that never sees these steps may say so instead (0 steps and a warning)
log = ref.Reference(per_sample_scale=8.0, may_decline=True)

for step, (x, y) in enumerate(batches):
    loss = F.mse_loss(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    log.backward(loss.item(), model, ref.per_sample(F.mse_loss), x, y)
    with torch.no_grad():
        for p, g in zip(model.parameters(), grads):
            p -= 0.05 * g
    log.step()
    print(f"step {step} loss {loss.item()!r}")
log.dump()
