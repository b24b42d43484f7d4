"""A small MLP trained for 6 steps with two param groups and a step schedule."""

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
optimizer = torch.optim.SGD(
    [{"params": model[0].parameters(), "lr": 0.1}, {"params": model[2].parameters(), "lr": 0.01}],
    momentum=0.9,
)
schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
inputs, targets = torch.randn(48, 4), torch.randint(0, 3, (48,))
for step in range(6):
    batch = slice(8 * step, 8 * step + 8)
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
    loss.backward()
    optimizer.step()
    schedule.step()
    print(f"step {step} loss {loss.item():.6f}")
