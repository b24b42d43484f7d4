"""MLP with Adam on a synthetic classification task; exits with --exit-code."""

import argparse
import sys

import torch
from reflog import RefLog, seeded
from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=6)
parser.add_argument("--exit-code", type=int, default=0)
args = parser.parse_args()

seeded(0)
model = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Dropout(0.1), nn.Linear(32, 4))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
log = RefLog(model.named_parameters())
x, y = torch.randn(48, 10), torch.randint(0, 4, (48,))
for step in range(args.steps):
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    log.before_update(loss)
    optimizer.step()
    log.after_update()
    print(f"step {step} loss {loss.item()!r} rand {torch.rand(1).item()!r}")
print("to stderr", file=sys.stderr)
log.dump()
sys.exit(args.exit_code)
