"""meta.json's layer table is written when the first step is recorded (docs/run-format.md),
so a process that ends without running its exit handlers (os._exit, SIGKILL) keeps it."""

from __future__ import annotations

import json
import sys

from tests.e2e.harness import run_recorded

SCRIPT = """
import os, sys, torch
from torch import nn
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(2):
    optimizer.zero_grad()
    model(torch.randn(5, 4)).pow(2).mean().backward()
    optimizer.step()
print("trained", flush=True)
os._exit(0)
"""


def test_layer_table_survives_an_exit_without_handlers(tmp_path):
    script = tmp_path / "train_exit.py"
    script.write_text(SCRIPT)
    recorded = run_recorded([sys.executable, str(script)], tmp_path / "run", tmp_path, cwd=tmp_path)
    assert recorded.returncode == 0 and recorded.stdout == "trained\n"
    layers = json.loads((tmp_path / "run" / "meta.json").read_text())["layers"]
    assert [entry["name"] for entry in layers] == ["0", "2"]
    assert all(entry["covered"] and entry["rows_steps"] >= 1 for entry in layers)
