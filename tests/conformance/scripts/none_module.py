"""Idiom 13b: a module with a parameter whose forward returns None (it writes its result
into a dict the caller passed)."""

import reference as ref
import torch
import torch.nn.functional as F
from torch import nn


class Temperature(nn.Module):
    def __init__(self):
        super().__init__()
        self.log_t = nn.Parameter(torch.zeros(1))

    def forward(self, logits, out):
        out["logits"] = logits * self.log_t.exp()


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(6, 12)
        self.head = nn.Linear(12, 3)
        self.temperature = Temperature()

    def forward(self, x):
        result = {}
        self.temperature(self.head(torch.tanh(self.body(x))), result)
        return result["logits"]


torch.manual_seed(24)
torch.set_default_dtype(torch.float64)
model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
batches = [(torch.randn(8, 6), torch.randint(0, 3, (8,))) for _ in range(3)]
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
