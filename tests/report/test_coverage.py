"""Per-sample coverage as the report and ``record``'s summary state it: an
nn.MultiheadAttention's out_proj (weight used functionally by its parent, rows written by
the parent's method) counts as covered, under the parent's method, in both."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from gradscope.report.coverage import coverage_by_method, layer_coverage
from tests.report.conftest import GRADSCOPE, REPO

MHA_SCRIPT = """
import torch, torch.nn as nn
torch.manual_seed(0)
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Linear(8, 32)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.head = nn.Linear(32, 1)
    def forward(self, x):
        h = self.emb(x)
        a, _ = self.attn(h, h, h)
        return self.head(a.mean(1))
model = Net()
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(4):
    x = torch.randn(4, 5, 8)
    loss = (model(x) ** 2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
"""


def entry(name: str, numel: int, method: str, rows: int) -> dict:
    return {"name": name, "type": "Linear", "numel": numel, "method": method, "covered": True,
            "rows_steps": rows, "first_step": 0, "last_step": rows - 1, "reasons": {}}


def test_child_without_method_takes_its_parents() -> None:
    meta = {"layers": [entry("attn", 300, "fallback", 6), entry("attn.out_proj", 100, "none", 6),
                       entry("head", 100, "ghost", 6), entry("lonely", 100, "none", 0)]}
    layers = {c.name: c for c in layer_coverage(meta)}
    assert layers["attn.out_proj"].method == "fallback (via attn)" and layers["attn.out_proj"].covered
    assert not layers["lonely"].covered
    shares = coverage_by_method(list(layers.values()))
    assert shares.keys() == {"fallback", "ghost", "none"} and shares["fallback"] == pytest.approx(4 / 6)


@pytest.mark.slow
def test_report_and_record_agree_on_multihead_attention(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(MHA_SCRIPT)
    done = subprocess.run([str(GRADSCOPE), "record", "--out", str(tmp_path / "run"), "--", sys.executable,
                           str(tmp_path / "train.py")], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    recorded = re.search(r"per-sample coverage (\d+)%", done.stderr.splitlines()[-1]).group(1)
    report = subprocess.run([str(GRADSCOPE), "report", str(tmp_path / "run"), "--width", "200"],
                            capture_output=True, text=True, cwd=REPO, timeout=300).stdout
    line = next(line for line in report.splitlines() if "per-sample coverage" in line)
    assert "none" not in line
    shares = [float(x) for x in re.findall(r"(\d+\.\d)%", line)]
    assert abs(sum(shares) - float(recorded)) < 0.5
