"""Idiom 3a: torch.nn.utils.parametrizations.spectral_norm and weight_norm."""

import reference as ref
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

torch.manual_seed(6)
torch.set_default_dtype(torch.float64)
model = nn.Sequential(spectral_norm(nn.Linear(6, 16)), nn.Tanh(), weight_norm(nn.Linear(16, 3)))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
batches = [(torch.randn(8, 6), torch.randint(0, 3, (8,))) for _ in range(4)]
log = ref.Reference(per_sample_scale=8.0)


def loss_of(m, j, x, y):
    m.eval()  # no power iteration in the copy: it reuses the u, v this step's forward left
    return F.cross_entropy(ref.spliced(m, ref.split(x), j), y)


for step, (x, y) in enumerate(batches):
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    log.backward(loss.item(), model, loss_of, x, y)
    optimizer.step()
    log.step()
    u = model[0].parametrizations.weight[0]._u
    print(f"step {step} loss {loss.item()!r} u {u.sum().item()!r}")
log.dump()
