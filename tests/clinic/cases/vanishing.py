"""Vanishing gradients: a 12-layer sigmoid MLP with PyTorch's default init. Each sigmoid
layer multiplies the backward signal by sigma' <= 1/4 times a weight matrix of gain
about 1/sqrt(3), so the first layers receive gradients orders of magnitude smaller than
the last (Pascanu et al. 2013; Glorot & Bengio 2010).

Healthy twin: the same depth with ReLU and He (Kaiming) init, which keeps the backward
signal's scale roughly constant across layers (He et al. 2015).
"""

import torch
from _common import parse, seeded
from torch import nn

args = parse(__doc__, steps=30)
generator = seeded(0)
samples, features, width, depth, classes, batch = 512, 16, 32, 12, 4, 128
x = torch.randn(samples, features, generator=generator)
y = (x @ torch.randn(features, classes, generator=generator)).argmax(1)
layers: list[nn.Module] = []
for index in range(depth):
    linear = nn.Linear(features if index == 0 else width, width)
    if args.healthy:
        nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        nn.init.zeros_(linear.bias)
    layers += [linear, nn.ReLU() if args.healthy else nn.Sigmoid()]
model = nn.Sequential(*layers, nn.Linear(width, classes))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for _step in range(args.steps):
    index = torch.randint(0, samples, (batch,), generator=generator)
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(x[index]), y[index])
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.4f}")
