"""Dead units: every first-layer ReLU bias shifted by -1.5 (about 2.6 standard deviations
of the pre-activations at PyTorch's default init), so most hidden units are zero for every
sample of a batch and get no gradient ("dying ReLU", Lu et al. 2019). The layer as a whole
still learns through its few live units: its gradient is not zero, only most of its units are.

Healthy twin: the default bias.
"""

import torch
from _common import parse, seeded
from torch import nn

args = parse(__doc__, steps=30)
generator = seeded(0)
samples, features, hidden, classes, batch = 512, 16, 64, 4, 64
x = torch.randn(samples, features, generator=generator)
y = (x @ torch.randn(features, classes, generator=generator)).argmax(1)
model = nn.Sequential(
    nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, classes)
)
if not args.healthy:
    with torch.no_grad():
        model[0].bias -= 1.5
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
for _step in range(args.steps):
    index = torch.randint(0, samples, (batch,), generator=generator)
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(x[index]), y[index])
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.4f}")
