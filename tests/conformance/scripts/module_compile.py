"""Idiom 2b: model.compile() on an MLP (backend aot_eager: AOTAutograd's compiled backward
without inductor's C++ build, so the suite stays fast)."""

import reference as ref
import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


torch.manual_seed(5)
torch.set_default_dtype(torch.float64)
model = MLP()
model.compile(backend="aot_eager")
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
batches = [(torch.randn(8, 6), torch.randint(0, 3, (8,))) for _ in range(4)]
log = ref.Reference(per_sample_scale=8.0)

for step, (x, y) in enumerate(batches):
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    log.backward(loss.item(), model, ref.per_sample(F.cross_entropy), x, y)
    optimizer.step()
    log.step()
    print(f"step {step} loss {loss.item()!r}")
log.dump()
