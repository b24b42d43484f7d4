"""A run recorded ``--every 50``: the metrics between recorded steps are nan. The HTML
draws the recorded points (no gaps, no envelope of nans) and says "recorded every 50
steps"; rules skip those nans, and a score never computed is skipped, never failed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradscope.report import cadence, charts
from gradscope.report.check import evaluate_metric
from gradscope.report.rules import parse_rule
from tests.report.conftest import GRADSCOPE, REPO

SPARSE_SCRIPT = """
import torch, torch.nn as nn
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
for step in range(1210):
    x = torch.randn(8, 4)
    loss = nn.functional.mse_loss(model(x), x.sum(1, keepdim=True))
    opt.zero_grad(); loss.backward(); opt.step()
"""


@pytest.fixture(scope="module")
def sparse_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sparse")
    (folder / "train.py").write_text(SPARSE_SCRIPT)
    run = folder / "run"
    done = subprocess.run([str(GRADSCOPE), "record", "--every", "50", "--out", str(run), "--",
                           sys.executable, str(folder / "train.py")],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    if done.returncode != 0:
        pytest.skip(f"gradscope record failed here: {done.stderr[-300:]}")
    return run


def gradscope(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(GRADSCOPE), *args], capture_output=True, text=True, cwd=REPO, timeout=300)


def test_cadence_gaps_are_off_grid_nans_only() -> None:
    steps = np.arange(0, 200)
    values = np.where(steps % 50 == 0, 1.0, np.nan)
    values[100] = np.nan  # a recorded step without a value: stays visible
    mask, every = cadence.gaps(steps, values)
    assert every == 50 and not mask[100] and mask.sum() == 200 - 4
    kept_steps, kept, _ = cadence.recorded(steps, values)
    assert list(kept_steps) == [0, 50, 100, 150] and np.isnan(kept[2])
    dense = np.where(steps == 7, np.nan, 1.0)  # a nan in an every-step series is not cadence
    assert cadence.gaps(steps, dense)[0].sum() == 0


def test_long_sparse_trace_is_raw_points_without_nan() -> None:
    steps = np.arange(4000)
    values = np.where(steps % 50 == 0, np.linspace(1, 2, 4000), np.nan)
    t = charts.trace("model", "model", "", steps, values)
    assert "lo" not in t and len(t["x"]) == 80 and None not in t["y"]
    assert t["every"] == 50 and t["nan"] == []


@pytest.mark.slow
def test_html_of_a_sparse_run(sparse_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    assert gradscope("report", str(sparse_run), "--html", str(out)).returncode == 0
    text = out.read_text()
    raw = re.search(r'<script type="application/json" id="gs-data">(.*?)</script>', text, re.S).group(1)
    data = json.loads(raw)
    chart = next(c for c in data["charts"] if c["metric"] == "stability.grad_norm")
    model = chart["traces"][0]
    assert model["every"] == 50 and None not in model["y"] and "lo" not in model
    assert len(model["x"]) == 25 and model["x"][:2] == [0, 50]
    assert "recorded every 50 steps" in text
    assert "no value (nan) at" not in text.split('id="chart-stability-grad_norm"')[1].split("</figure>")[0]


@pytest.mark.slow
def test_rules_on_a_sparse_run(sparse_run: Path) -> None:
    done = gradscope("check", str(sparse_run), "--format", "json", "--rule", "stability.grad_norm.last < 1e9",
                     "--rule", "stability.grad_norm.count < 26")
    assert done.returncode == 0, done.stdout + done.stderr
    rules = json.loads(done.stdout)["rules"]
    assert [r["status"] for r in rules] == ["pass", "pass"] and rules[1]["value"] == 25


def test_never_computed_metric_is_skipped_not_failed() -> None:
    metrics = pd.DataFrame({"family": "stability", "name": "grad_norm_spike_z", "scope": "model", "key": "",
                            "step": np.arange(100), "value": np.nan})
    for text in ("stability.grad_norm_spike_z.max < 12", "stability.grad_norm_spike_z.last < 12",
                 "stability.grad_norm_spike_z.all < 12"):
        outcome = evaluate_metric(parse_rule(text), metrics)
        assert outcome.status == "skipped" and "never computed" in outcome.note
    assert evaluate_metric(parse_rule("stability.grad_norm_spike_z.count > 0"), metrics).status == "fail"
