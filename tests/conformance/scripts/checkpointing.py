"""Idiom 6: activation checkpointing of residual blocks; argv[1] is "reentrant" or "non-reentrant"."""

import sys

import reference as ref
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, x):
        return x + self.fc2(torch.tanh(self.fc1(x)))


class Net(nn.Module):
    def __init__(self, use_reentrant):
        super().__init__()
        self.stem = nn.Linear(6, 12)
        self.blocks = nn.ModuleList([Block(12), Block(12)])
        self.head = nn.Linear(12, 3)
        self.use_reentrant = use_reentrant
        self.gradient_checkpointing = True

    def forward(self, x):
        h = torch.tanh(self.stem(x))
        for block in self.blocks:
            if self.gradient_checkpointing and self.training:
                h = checkpoint(block, h, use_reentrant=self.use_reentrant)
            else:
                h = block(h)
        return self.head(h)


def loss_of(m, j, x, y):
    m.gradient_checkpointing = False  # same math; reentrant checkpoint refuses autograd.grad
    return F.cross_entropy(ref.spliced(m, ref.split(x), j), y)


torch.manual_seed(14)
torch.set_default_dtype(torch.float64)
model = Net(use_reentrant=sys.argv[1] == "reentrant")
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
batches = [(torch.randn(8, 6), torch.randint(0, 3, (8,))) for _ in range(3)]
log = ref.Reference(per_sample_scale=8.0)

for step, (x, y) in enumerate(batches):
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    log.backward(loss.item(), model, loss_of, x, y)
    optimizer.step()
    log.step()
    print(f"step {step} loss {loss.item()!r}")
log.dump()
