"""Idiom 9b: nn.Embedding(sparse=True) with optim.SparseAdam, the dense rest with Adam
(two optimizers, as the SparseAdam docs advise). docs/run-format.md: each optimizer's step
is a step, so one iteration is two steps; the backward belongs to the first."""

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


torch.manual_seed(18)
torch.set_default_dtype(torch.float64)
model = BagOfWords()
sparse_optimizer = torch.optim.SparseAdam(list(model.embed.parameters()), lr=1e-2)
dense_optimizer = torch.optim.Adam(model.fc.parameters(), lr=1e-2)
batches = [(torch.randint(0, 20, (6, 5)), torch.randint(0, 2, (6,))) for _ in range(4)]
log = ref.Reference(per_sample_scale=6.0)

for step, (ids, y) in enumerate(batches):
    sparse_optimizer.zero_grad()
    dense_optimizer.zero_grad()
    loss = F.cross_entropy(model(ids), y)
    loss.backward()
    log.backward(loss.item(), model, ref.per_sample(F.cross_entropy), ids, y)
    sparse_optimizer.step()
    log.step()
    dense_optimizer.step()
    log.step(loss=float("nan"))  # no backward of its own
    print(f"iteration {step} loss {loss.item()!r}")
log.dump()
