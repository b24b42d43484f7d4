"""Idiom 12: a user's tensor hook raises inside backward on a corrupt batch; the script
catches it and skips that batch."""

import reference as ref
import torch
import torch.nn.functional as F
from torch import nn


class GuardedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 12)
        self.fc2 = nn.Linear(12, 3)

    def forward(self, x):
        h = self.fc1(x)
        if h.requires_grad:
            h.register_hook(check_finite)
        return self.fc2(torch.tanh(h))


def check_finite(grad):
    if not torch.isfinite(grad).all():
        raise FloatingPointError("non-finite gradient in fc1's output")
    return grad


torch.manual_seed(22)
torch.set_default_dtype(torch.float64)
model = GuardedNet()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
batches = [(torch.randn(8, 6), torch.randint(0, 3, (8,))) for _ in range(5)]
batches[2][0][3, 1] = float("nan")  # a corrupt sample
log = ref.Reference(per_sample_scale=8.0)

for i, (x, y) in enumerate(batches):
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    try:
        loss.backward()
    except FloatingPointError as err:
        print(f"batch {i} skipped: {err}")
        optimizer.zero_grad()
        continue
    log.backward(loss.item(), model, ref.per_sample(F.cross_entropy), x, y)
    optimizer.step()
    log.step()
    print(f"batch {i} loss {loss.item()!r}")
log.dump()
