"""In-process: a failing statistic is dropped, never the step it belongs to."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from gradscope.record import recorder as recorder_module
from gradscope.record.recorder import Recorder
from gradscope.store.reader import open_run


def _train(run_dir, steps=3):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(6, 4), torch.randint(0, 2, (6,))
    with Recorder(model, optimizer, run_dir=run_dir, profile="minimal"):
        for _ in range(steps):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()


def test_a_failing_statistic_keeps_every_step(tmp_path, monkeypatch, capsys):
    def broken(params):
        raise RuntimeError("no kernel for this layout\n" + "dispatcher line\n" * 90)

    monkeypatch.setattr(recorder_module.scalars, "grad_norms", broken)
    monkeypatch.setattr("gradscope.record.optim.scalars.grad_norms", broken)
    _train(tmp_path / "run")
    run = open_run(tmp_path / "run")
    steps = run.table("steps")
    assert list(steps["step"]) == [0, 1, 2] and steps["loss"].notna().all()
    layers = run.table("layers")
    assert sorted(layers["step"].unique()) == [0, 1, 2]
    assert layers["grad_norm"].isna().all() and np.isfinite(layers["update_norm"]).all()
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("gradscope:")]
    assert len(warnings) == 1 and "no kernel" in warnings[0] and "dispatcher" not in warnings[0]
    assert all("\n" not in failure["message"] for failure in run.meta["failures"])


def test_raw_tensors_with_no_module_get_one_step_per_backward(tmp_path):
    """The "Tensors and autograd" tutorial: a polynomial in raw tensors, updated by hand."""
    torch.manual_seed(0)
    x = torch.linspace(-1, 1, 50)
    y = torch.sin(x)
    weights = [torch.randn((), requires_grad=True) for _ in range(4)]
    losses = []
    with Recorder(run_dir=tmp_path / "run", profile="minimal"):
        for _ in range(5):
            a, b, c, d = weights
            loss = (a + b * x + c * x**2 + d * x**3 - y).pow(2).sum()
            loss.backward()
            losses.append(loss.item())
            with torch.no_grad():
                for w in weights:
                    w -= 1e-3 * w.grad
                    w.grad = None
    steps = open_run(tmp_path / "run").table("steps")
    assert list(steps["step"]) == list(range(5)) and (steps["backward_calls"] == 1).all()
    np.testing.assert_allclose(steps["loss"], losses, rtol=1e-6)
