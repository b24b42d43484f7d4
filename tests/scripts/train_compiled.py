"""An MLP trained through torch.compile (the wrapper, or model.compile() in place)."""

import argparse

import torch
from torch import nn
from torch.nn import functional as F

parser = argparse.ArgumentParser()
parser.add_argument("--style", choices=["wrapper", "method"], default="wrapper")
args = parser.parse_args()

torch.manual_seed(0)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(10, 32)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        return self.head(F.relu(self.fc(x)))


model = Net()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
if args.style == "wrapper":
    train_model = torch.compile(model, backend="eager")
else:
    model.compile(backend="eager")
    train_model = model
x, y = torch.randn(32, 10), torch.randint(0, 4, (32,))
for step in range(4):
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(train_model(x), y)
    loss.backward()
    optimizer.step()
    print(f"step {step} loss {loss.item()!r}")
