"""Conflicting tasks: two data sources whose regression targets are opposite (y_b = -y_a)
through one shared model, so their gradients point apart on every shared parameter.

Healthy twin: source b's target is a close relative of a's (y_b = y_a + a small extra
direction). Each step names the two task losses (gradscope.tasks) and labels the samples
by source (gradscope.groups), so conflict shows as task cosines and group cosines.
"""

import torch
from _common import parse, seeded
from torch import nn

import gradscope

args = parse(__doc__, steps=30)
generator = seeded(0)
features, half = 16, 32
teacher = torch.randn(features, generator=generator)
other = -teacher if not args.healthy else teacher + 0.3 * torch.randn(features, generator=generator)
model = nn.Sequential(nn.Linear(features, 32), nn.Tanh(), nn.Linear(32, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.02)
source = torch.cat([torch.zeros(half), torch.ones(half)]).long()
for _step in range(args.steps):
    x = torch.randn(2 * half, features, generator=generator)
    target = torch.cat([x[:half] @ teacher, x[half:] @ other])
    optimizer.zero_grad()
    per_sample = (model(x).squeeze(1) - target) ** 2
    gradscope.tasks(a=per_sample[:half].mean(), b=per_sample[half:].mean())
    gradscope.groups(source)
    loss = per_sample.mean()
    loss.backward()
    optimizer.step()
print(f"final loss {loss.item():.4f}")
