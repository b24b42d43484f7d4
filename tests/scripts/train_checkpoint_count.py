"""Gradient checkpointing with use_reentrant=True: the backward pass calls backward again."""

import torch
import torch.nn.functional as F
from reflog import RefLog, seeded
from torch import nn
from torch.utils.checkpoint import checkpoint

seeded(8)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.Linear(16, 6))
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(checkpoint(self.block, x, use_reentrant=True))


model = Net()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
log = RefLog(model.named_parameters())
x, y = torch.randn(8, 6, requires_grad=True), torch.randint(0, 2, (8,))
for step in range(3):
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    log.before_update(loss)
    optimizer.step()
    log.after_update()
    print(f"step {step} loss {loss.item()!r}")
log.dump()
