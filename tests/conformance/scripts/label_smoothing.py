"""Idiom 5b: cross-entropy with label_smoothing=0.1."""

import reference as ref
import torch
from torch import nn

torch.manual_seed(11)
torch.set_default_dtype(torch.float64)
model = nn.Sequential(nn.Linear(6, 16), nn.SiLU(), nn.Linear(16, 4))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, nesterov=True, momentum=0.9)
criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
batches = [(torch.randn(8, 6), torch.randint(0, 4, (8,))) for _ in range(4)]
log = ref.Reference(per_sample_scale=8.0)

for step, (x, y) in enumerate(batches):
    optimizer.zero_grad()
    loss = criterion(model(x), y)
    loss.backward()
    log.backward(loss.item(), model, ref.per_sample(criterion), x, y)
    optimizer.step()
    log.step()
    print(f"step {step} loss {loss.item()!r}")
log.dump()
