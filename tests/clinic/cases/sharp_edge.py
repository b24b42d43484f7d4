"""Past the edge of stability, seen by curvature (record with --curvature every=N): a
two-layer tanh network fitted to a noisy linear target by SGD (mini-batches of 64) at
lr = 3 / lambda_max of its loss Hessian at initialisation, past gradient descent's
2 / lambda_max (Cohen et al. 2021).
lambda_max is measured before training by power iteration on Hessian-vector products of the
full-batch loss (a private generator: the training's random stream is untouched).

Healthy twin: lr = 0.5 / lambda_max.
"""

import torch
from _common import parse, seeded
from torch import nn
from torch.nn import functional as F

args = parse(__doc__, steps=20)
generator = seeded(0)
samples, features = 256, 16
x = torch.randn(samples, features, generator=generator) * torch.linspace(0.5, 3.0, features)
y = x @ torch.randn(features, 1, generator=generator) + 0.1 * torch.randn(samples, 1, generator=generator)
model = nn.Sequential(nn.Linear(features, 16), nn.Tanh(), nn.Linear(16, 1))


def sharpness(iterations: int = 50) -> float:
    params = list(model.parameters())
    grads = torch.autograd.grad(F.mse_loss(model(x), y), params, create_graph=True)
    v = [torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) for p in params]
    value = 0.0
    for _ in range(iterations):
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        value = float(sum((a * b).sum() for a, b in zip(hv, v)))
        norm = float(sum(h.square().sum() for h in hv)) ** 0.5
        v = [h / norm for h in hv]
    return value


lr = (0.5 if args.healthy else 3.0) / sharpness()
optimizer = torch.optim.SGD(model.parameters(), lr=lr)
for _step in range(args.steps):
    index = torch.randint(0, samples, (64,), generator=generator)
    optimizer.zero_grad()
    loss = F.mse_loss(model(x[index]), y[index])
    loss.backward()
    optimizer.step()
print(f"lr {lr:.4g} final loss {loss.item():.4g}")
