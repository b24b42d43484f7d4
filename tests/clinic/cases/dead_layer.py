"""Dead layer: the second hidden layer's ReLU bias starts at -20, so every pre-activation
is negative, its output is 0 for every input and no gradient flows through it ("dying
ReLU"). The layer and everything below it get exactly zero gradient on every step.

Healthy twin: the usual zero-initialised bias.
"""

import torch
from _common import parse, seeded
from torch import nn

args = parse(__doc__, steps=30)
generator = seeded(0)
samples, features, classes, batch = 512, 16, 4, 64
x = torch.randn(samples, features, generator=generator)
y = (x @ torch.randn(features, classes, generator=generator)).argmax(1)
model = nn.Sequential(
    nn.Linear(features, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, classes)
)
with torch.no_grad():
    model[2].bias.fill_(0.0 if args.healthy else -20.0)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
for _step in range(args.steps):
    index = torch.randint(0, samples, (batch,), generator=generator)
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(x[index]), y[index])
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.4f}")
