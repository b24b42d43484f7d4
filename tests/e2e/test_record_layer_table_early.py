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


TRAILING_BACKWARD = """
import torch
from torch import nn
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(3):
    optimizer.zero_grad()
    model(torch.randn(5, 4)).pow(2).mean().backward()
    optimizer.step()
x = torch.randn(2, 4, requires_grad=True)  # a saliency map after training: no step takes it
model(x)[:, 0].sum().backward()
print("saliency", x.grad.shape)
"""


def test_a_backward_after_the_last_step_is_not_counted_as_rows(tmp_path):
    script = tmp_path / "train_saliency.py"
    script.write_text(TRAILING_BACKWARD)
    recorded = run_recorded([sys.executable, str(script)], tmp_path / "run", tmp_path, cwd=tmp_path)
    assert recorded.returncode == 0
    layers = json.loads((tmp_path / "run" / "meta.json").read_text())["layers"]
    evidence = [(e["rows_steps"], e["first_step"], e["last_step"], e["reasons"]) for e in layers]
    assert evidence == [(3, 0, 2, {})] * 2
