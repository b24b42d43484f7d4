"""`gradscope export RUN --tensorboard DIR`, read back with tensorboard's own event reader."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradscope.analysis import analyze
from gradscope.analysis.schedule import learning_rates, schedule_metrics
from gradscope.errors import GradscopeError
from gradscope.report.tensorboard import scalar_tag
from gradscope.store.reader import open_run
from tests.e2e.harness import gradscope

SCRIPT = Path(__file__).resolve().parent / "scripts" / "two_groups.py"
LR = [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]  # StepLR(step_size=2, gamma=0.5) from 0.1


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    pytest.importorskip("tensorboard")
    tmp = tmp_path_factory.mktemp("export")
    run, logdir = tmp / "run", tmp / "tb"
    recorded = gradscope("record", "--out", str(run), "--", sys.executable, str(SCRIPT))
    assert recorded.returncode == 0, recorded.stderr
    done = gradscope("export", str(run), "--tensorboard", str(logdir))
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stderr and "histograms" in done.stderr
    return run, logdir


def _accumulator(logdir: Path):
    from tensorboard.backend.event_processing.event_accumulator import (
        HISTOGRAMS,
        SCALARS,
        EventAccumulator,
    )

    events = EventAccumulator(str(logdir), size_guidance={SCALARS: 0, HISTOGRAMS: 0})
    events.Reload()
    return events


def _scalars(events, tag: str) -> tuple[list[int], np.ndarray]:
    points = events.Scalars(tag)
    return [p.step for p in points], np.array([p.value for p in points])


@pytest.mark.slow
def test_scalars_read_back_equal_the_metrics_table(exported) -> None:
    run, logdir = exported
    events = _accumulator(logdir)
    metrics = analyze(run).metrics
    curves = metrics[(metrics["step"] >= 0) & (metrics["scope"] != "sample") & np.isfinite(metrics["value"])]
    tags = events.Tags()["scalars"]
    assert sum(len(events.Scalars(t)) for t in tags) == len(curves)
    for row in curves.sample(n=min(60, len(curves)), random_state=0).itertuples():
        tag = scalar_tag(row.family, row.name, row.scope, row.key)
        steps, values = _scalars(events, tag)
        assert values[steps.index(row.step)] == pytest.approx(row.value, rel=1e-6, abs=1e-30), tag


@pytest.mark.slow
def test_learning_rates_and_layer_norms(exported) -> None:
    run, logdir = exported
    events = _accumulator(logdir)
    for group, scale in (("0", 1.0), ("1", 0.1)):
        steps, values = _scalars(events, f"stability/lr/param_group/{group}")
        assert steps == list(range(6))
        np.testing.assert_allclose(values, np.array(LR) * scale, rtol=1e-6)
    layers = open_run(run).table("layers")
    for name in ("weight_norm", "update_norm"):
        expected = layers[layers["layer"] == "2"].groupby("step")[name].apply(lambda v: np.sqrt((v**2).sum()))
        steps, values = _scalars(events, f"stability/{name}/layer/2")
        np.testing.assert_allclose(values, expected.loc[steps].to_numpy(), rtol=1e-6)
    steps, loss = _scalars(events, "stability/loss")
    np.testing.assert_allclose(loss, open_run(run).table("steps").sort_values("step")["loss"], rtol=1e-6)


@pytest.mark.slow
def test_per_sample_histograms(exported) -> None:
    run, logdir = exported
    events = _accumulator(logdir)
    samples = open_run(run).table("samples")
    norms = np.sqrt(samples.groupby(["step", "micro", "sample"])["norm2"].sum())
    # a mean loss over 8 samples: g_i = 8 c_i
    for tag, factor in (("per_sample/contribution_norm", 1.0), ("per_sample/grad_norm", 8.0)):
        histograms = events.Histograms(tag)
        assert [h.step for h in histograms] == list(range(6))
        for event in histograms:
            want = norms.loc[event.step].to_numpy() * factor
            histo = event.histogram_value
            assert histo.num == 8 and sum(histo.bucket) == 8
            assert histo.max == pytest.approx(want.max(), rel=1e-9)
            assert histo.sum_squares == pytest.approx(float(want @ want), rel=1e-9)


@pytest.mark.slow
def test_export_refuses_to_double_an_export_and_check_reads_lr(exported, tmp_path) -> None:
    run, logdir = exported
    again = gradscope("export", str(run), "--tensorboard", str(logdir))
    assert again.returncode == 2 and "--force" in again.stderr and len(again.stderr.splitlines()) == 1
    forced = gradscope("export", str(run), "--tensorboard", str(logdir), "--force")
    assert forced.returncode == 0 and len(list(logdir.iterdir())) == 1
    nothing = gradscope("export", str(run))
    assert nothing.returncode == 2 and "--tensorboard" in nothing.stderr
    inside = gradscope("export", str(run), "--tensorboard", str(run / "tb"))
    assert inside.returncode == 2 and "inside the run" in inside.stderr
    ok = gradscope("check", str(run), "--rule", "stability.lr[param_group=1].max <= 0.01",
                   "--rule", "stability.update_norm[layer=*].max < 10")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    fails = gradscope("check", str(run), "--rule", "stability.lr[param_group=0].min > 0.05")
    assert fails.returncode == 1


def test_missing_tensorboard_is_one_line(monkeypatch) -> None:
    from gradscope.report import tensorboard

    monkeypatch.setitem(sys.modules, "tensorboard.summary.writer.event_file_writer", None)
    with pytest.raises(GradscopeError, match=r"pip install 'gradscope\[tensorboard\]'"):
        tensorboard._tensorboard()


def test_importing_gradscope_imports_no_trainer() -> None:
    code = ("import sys, gradscope, gradscope.integrations, gradscope.cli, gradscope.analysis; "
            "print(sorted(m for m in ('lightning', 'pytorch_lightning', 'transformers', 'tensorboard') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_learning_rates_per_group_and_optimizer() -> None:
    steps = pd.DataFrame({
        "step": [0, 1, 2, 3],
        "optimizer": [0, 1, 0, -1],
        "hparams": ['[{"lr": 0.1}, {"lr": 0.2}]', '[{"lr": 1e-3}]', 'not json', "[]"],
    })
    rates = learning_rates(steps)
    assert rates.to_dict("list") == {"step": [0, 0, 1], "key": ["0.0", "0.1", "1.0"], "lr": [0.1, 0.2, 1e-3]}
    one_optimizer = steps[steps["optimizer"] == 0].assign(hparams=['[{"lr": true}, {"lr": 2}]', "[]"])
    single = learning_rates(one_optimizer)
    assert single.to_dict("list") == {"step": [0], "key": ["1"], "lr": [2.0]}  # a bool is no learning rate


def test_layer_norms_combine_parameters() -> None:
    layers = pd.DataFrame({
        "step": [0, 0, 0], "layer": ["fc", "fc", "head"], "param": ["fc.weight", "fc.bias", "head.weight"],
        "weight_norm": [3.0, 4.0, 1.0], "update_norm": [0.3, 0.4, np.nan],
    })
    rows = schedule_metrics(None, layers).set_index(["name", "key"])["value"]
    assert rows[("weight_norm", "fc")] == pytest.approx(5.0)
    assert rows[("update_norm", "fc")] == pytest.approx(0.5)
    assert ("update_norm", "head") not in rows.index  # not measured: no row, never 0
