"""Label noise: 90% of the labels replaced by uniform random classes (about 2 in 3 wrong).

Teacher: 4 classes from a random linear map of 20-d Gaussian inputs. Healthy twin: clean labels.
"""

import torch
from _common import parse, seeded
from torch import nn

args = parse(__doc__, steps=40)
generator = seeded(0)
samples, features, classes, batch = 1024, 20, 4, 32
x = torch.randn(samples, features, generator=generator)
y = (x @ torch.randn(features, classes, generator=generator)).argmax(1)
if not args.healthy:
    noisy = torch.rand(samples, generator=generator) < 0.9
    y = torch.where(noisy, torch.randint(0, classes, (samples,), generator=generator), y)

model = nn.Sequential(nn.Linear(features, 32), nn.Tanh(), nn.Linear(32, classes))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
for _step in range(args.steps):
    index = torch.randint(0, samples, (batch,), generator=generator)
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(x[index]), y[index])
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.4f}")
