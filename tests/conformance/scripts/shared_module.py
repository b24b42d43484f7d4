"""Extra idiom: one encoder (Linear + LayerNorm) used twice in a forward, a siamese pair
scorer; a sample is a pair, its contribution sums both uses (Opacus issue #578: a LayerNorm
"used in 2 places" got no per-sample gradient)."""

import reference as ref
import torch
import torch.nn.functional as F
from torch import nn


class Siamese(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(6, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 1)

    def embed(self, x):
        return self.norm(torch.tanh(self.encoder(x)))

    def forward(self, a, b):
        return self.head(self.embed(a) * self.embed(b)).squeeze(1)


def loss_of(m, j, a, b, same):
    return F.binary_cross_entropy_with_logits(ref.spliced(m, ref.split(a, b), j), same)


torch.manual_seed(26)
torch.set_default_dtype(torch.float64)
model = Siamese()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
batches = [(torch.randn(8, 6), torch.randn(8, 6), torch.randint(0, 2, (8,)).double()) for _ in range(4)]
log = ref.Reference(per_sample_scale=8.0)

for step, (a, b, same) in enumerate(batches):
    optimizer.zero_grad()
    loss = F.binary_cross_entropy_with_logits(model(a, b), same)
    loss.backward()
    log.backward(loss.item(), model, loss_of, a, b, same)
    optimizer.step()
    log.step()
    print(f"step {step} loss {loss.item()!r}")
log.dump()
