"""`gradscope record` (standard profile: no B x B Gram) on a script with sample groups and
gradient accumulation: group conflict, micro-batch distance and gradient autocorrelation
come from the sketch sums, and GSNR with its standard error (issue 14)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradscope.analysis.run import analyze_run
from gradscope.store.reader import open_run
from tests.e2e.harness import gradscope, run_recorded

SCRIPT = """
import torch
import torch.nn as nn
import gradscope

torch.manual_seed(0)
true_w = torch.randn(24, 8)
model = nn.Linear(24, 8)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
accumulation = 2
for step in range(10):
    optimizer.zero_grad()
    for micro in range(accumulation):
        x = torch.randn(48, 24)
        # groups 0 and 2 share one target; group 1's target is negated (a planted conflict)
        group = torch.arange(48) % 3
        y = (x @ true_w) * torch.where(group == 1, -1.0, 1.0)[:, None]
        gradscope.groups(group)
        loss = nn.functional.mse_loss(model(x), y) / accumulation
        loss.backward()
    gradient = torch.cat([p.grad.flatten() for p in model.parameters()])
    if step:
        print("cos", float(torch.nn.functional.cosine_similarity(gradient, previous, dim=0)))
    previous = gradient.clone()
    optimizer.step()
print("done")
"""


def _values(metrics: pd.DataFrame, family: str, name: str, scope: str, key: str = "") -> np.ndarray:
    chosen = metrics[(metrics["family"] == family) & (metrics["name"] == name) & (metrics["scope"] == scope)]
    return chosen[chosen["key"] == key]["value"].to_numpy(float)


@pytest.mark.slow
def test_standard_profile_gives_group_conflict_micro_distance_and_autocorrelation(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text(SCRIPT)
    command = [sys.executable, "train.py"]
    recorded = run_recorded(command, tmp_path / "run", tmp_path, ("--sketch", "16"), cwd=tmp_path)
    assert recorded.returncode == 0 and "done" in recorded.stdout, recorded.stderr
    run = open_run(tmp_path / "run")
    assert not run.has("gram")  # standard profile: everything below comes from the sketches
    metrics = analyze_run(run).metrics
    assert np.median(_values(metrics, "conflict", "group_cos", "group_pair", "0|1")) < -0.8
    agreeing = _values(metrics, "conflict", "group_cos", "group_pair", "0|2")
    assert np.median(agreeing) > 0.8
    plug_in = _values(metrics, "conflict", "group_cos_batch", "group_pair", "0|2")
    assert np.median(agreeing) > np.median(plug_in)  # the plug-in cosine shrinks toward 0
    distance = _values(metrics, "coherence", "micro_distance", "model")
    assert len(distance) == 10 and np.isfinite(distance).all()
    autocorr = _values(metrics, "coherence", "grad_autocorr", "model")
    exact = [float(line.split()[1]) for line in recorded.stdout.splitlines() if line.startswith("cos ")]
    assert autocorr == pytest.approx(exact, abs=0.2)  # the sketch estimate (measured error <= 0.12)
    gsnr = metrics[(metrics["name"] == "gsnr") & (metrics["scope"] == "layer")]
    error = metrics[(metrics["name"] == "gsnr_se") & (metrics["scope"] == "layer")]
    assert len(gsnr) == 10 and len(error) == 10 and (error["value"] > 0).all()
    report = gradscope("report", "--no-color", str(tmp_path / "run"))
    assert report.returncode == 0, report.stderr
