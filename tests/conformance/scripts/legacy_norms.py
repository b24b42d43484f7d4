"""Idiom 3b: the hook-based torch.nn.utils.spectral_norm and weight_norm of older GAN code."""

import warnings

import reference as ref
import torch
import torch.nn.functional as F
from torch import nn

warnings.simplefilter("ignore", FutureWarning)  # weight_norm's deprecation notice


def build():
    return nn.Sequential(
        nn.utils.spectral_norm(nn.Linear(6, 16)), nn.Tanh(), nn.utils.weight_norm(nn.Linear(16, 3))
    )


def clone(model):
    """deepcopy refuses these modules (their .weight is a non-leaf): rebuild and load."""
    twin = build()
    twin.load_state_dict(model.state_dict())
    return twin.eval()  # no power iteration in the copy


torch.manual_seed(7)
torch.set_default_dtype(torch.float64)
model = build()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
batches = [(torch.randn(8, 6), torch.randint(0, 3, (8,))) for _ in range(4)]
log = ref.Reference(per_sample_scale=8.0)

for step, (x, y) in enumerate(batches):
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    log.backward(loss.item(), model, ref.per_sample(F.cross_entropy), x, y, clone=clone)
    optimizer.step()
    log.step()
    print(f"step {step} loss {loss.item()!r} u {model[0].weight_u.sum().item()!r}")
log.dump()
