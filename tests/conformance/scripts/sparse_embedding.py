"""Idiom 9a: nn.Embedding(sparse=True) trained with optim.SGD (which takes sparse gradients)."""

import reference as ref
import torch
import torch.nn.functional as F
from torch import nn


class BagOfWords(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 6, sparse=True)
        self.fc = nn.Linear(6, 2)

    def forward(self, ids):
        return self.fc(self.embed(ids).mean(dim=1))


torch.manual_seed(17)
torch.set_default_dtype(torch.float64)
model = BagOfWords()
optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
batches = [(torch.randint(0, 20, (6, 5)), torch.randint(0, 2, (6,))) for _ in range(4)]
log = ref.Reference(per_sample_scale=6.0)

for step, (ids, y) in enumerate(batches):
    optimizer.zero_grad()
    loss = F.cross_entropy(model(ids), y)
    loss.backward()
    log.backward(loss.item(), model, ref.per_sample(F.cross_entropy), ids, y)
    optimizer.step()
    log.step()
    print(f"step {step} loss {loss.item()!r}")
log.dump()
