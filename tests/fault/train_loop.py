"""A small training loop in the shape of the PyTorch examples, for the fault tests.

Prints "pid N" first and "step N" after each optimizer step (flushed), so a test knows
where training is before it sends a signal. --handle-sigterm installs the script's own
SIGTERM handler (stop at the next step, exit 143), as cluster-aware scripts do.
"""

import argparse
import os
import signal
import sys
import time

import torch
from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=50)
parser.add_argument("--sleep", type=float, default=0.0)
parser.add_argument("--handle-sigterm", action="store_true")
parser.add_argument("--no-backward", action="store_true")
args = parser.parse_args()

stop = False
if args.handle_sigterm:
    def on_sigterm(signum, frame):
        global stop
        stop = True

    signal.signal(signal.SIGTERM, on_sigterm)

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.LayerNorm(32), nn.Linear(32, 4))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
print(f"pid {os.getpid()}", flush=True)
for step in range(args.steps):
    x, y = torch.randn(8, 16), torch.randint(0, 4, (8,))
    loss = nn.functional.cross_entropy(model(x), y)
    if not args.no_backward:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    print(f"step {step}", flush=True)
    if stop:
        print("checkpoint saved, exiting", flush=True)
        sys.exit(143)
    if args.sleep:
        time.sleep(args.sleep)
