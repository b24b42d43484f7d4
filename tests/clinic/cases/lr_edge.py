"""Learning rate past the stability edge: SGD (mini-batches of 64) on a least-squares
problem with lr = 2.5 / lambda_max, above gradient descent's 2 / lambda_max limit (Cohen et
al. 2021), so the loss grows geometrically along the stiffest direction.

Healthy twin: lr = 0.5 / lambda_max. lambda_max is computed from the data (top
eigenvalue of the Hessian 2 X^T X / n of the mean squared error of a linear model).
"""

import torch
from _common import parse, seeded
from torch import nn

args = parse(__doc__, steps=40)
generator = seeded(0)
samples, features = 256, 16
scales = torch.linspace(0.5, 3.0, features)  # anisotropic inputs: one stiff direction
x = torch.randn(samples, features, generator=generator) * scales
y = x @ torch.randn(features, generator=generator) + 0.1 * torch.randn(samples, generator=generator)
sharpness = float(torch.linalg.eigvalsh(2 * x.T @ x / samples).max())
model = nn.Linear(features, 1)
lr = (0.5 if args.healthy else 2.5) / sharpness
optimizer = torch.optim.SGD(model.parameters(), lr=lr)
for _step in range(args.steps):
    index = torch.randint(0, samples, (64,), generator=generator)
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(x[index]).squeeze(1), y[index])
    loss.backward()
    optimizer.step()
print(f"lr {lr:.4g} (2/sharpness {2 / sharpness:.4g}) final loss {loss.item():.4g}")
