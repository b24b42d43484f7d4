"""Static figures (`gradscope report RUN --figures DIR`) and the downsampling both report
kinds share: spikes survive bucketing, short runs get whole-step ticks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.collections import PolyCollection
from typer.testing import CliRunner

from gradscope.cli import app
from gradscope.report import downsample, plots
from tests.report.conftest import REPO

runner = CliRunner()


def test_envelope_keeps_every_spike_and_counts_nonfinite() -> None:
    rng = np.random.default_rng(0)
    steps = np.arange(7000)
    values = rng.normal(1.0, 0.1, 7000)
    values[[1234, 5001]] = [50.0, -40.0]
    values[[10, 11]] = [np.nan, np.inf]
    env = downsample.envelope(steps, values, 1000)
    assert len(env.mean) == 1000 and env.start[0] == 0 and env.stop[-1] == 6999
    assert np.nanmax(env.high) == 50.0 and np.nanmin(env.low) == -40.0  # a plain stride loses these
    assert env.nonfinite.sum() == 2 and np.isfinite(env.mean).all()
    spike = np.flatnonzero((env.start <= 1234) & (env.stop >= 1234))[0]
    assert env.high[spike] == 50.0
    covered = sum(int(b - a) + 1 for a, b in zip(env.start, env.stop))
    assert covered == 7000  # buckets tile the steps


def test_envelope_of_a_bucket_without_finite_values_is_a_gap() -> None:
    env = downsample.envelope(np.arange(4), np.array([1.0, np.nan, np.nan, 2.0]), 4)
    assert np.isnan(env.mean[1]) and np.isnan(env.low[2]) and env.nonfinite.tolist() == [0, 1, 1, 0]


def test_short_runs_get_whole_step_ticks() -> None:
    fig = plots.line_figure({"loss": pd.DataFrame({"step": [0, 1, 2], "value": [3.0, 2.0, 1.5]})}, "loss")
    ax = fig.axes[0]
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_long_runs_draw_a_band_not_7000_segments() -> None:
    frame = pd.DataFrame({"step": np.arange(7000), "value": np.random.default_rng(1).random(7000)})
    fig = plots.line_figure({"loss": frame}, "loss")
    ax = fig.axes[0]
    assert len(ax.lines[0].get_xdata()) == 1000
    assert any(isinstance(c, PolyCollection) for c in ax.collections)


def test_cli_figures_writes_png_and_pdf(synthetic_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "figs" / "nested"
    result = runner.invoke(app, ["report", str(synthetic_run), "--quiet", "--figures", str(out)])
    assert result.exit_code == 0, result.output
    stems = {p.stem for p in out.iterdir()}
    assert {"loss-grad-norm", "learning-rate", "layers-grad-norm", "conflict-tasks", "coherence"} <= stems
    for stem in stems:
        assert (out / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"


def test_cli_figures_refuses_a_file_and_the_run_tables(synthetic_run: Path, tmp_path: Path) -> None:
    afile = tmp_path / "x.png"
    afile.write_bytes(b"")
    for target in (afile, synthetic_run / "steps" / "figs"):
        command = [sys.executable, "-m", "gradscope", "report", str(synthetic_run), "--quiet",
                   "--figures", str(target)]
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (synthetic_run / "steps" / "figs").exists()


def test_heatmap_buckets_keep_a_one_layer_spike() -> None:
    grid = np.ones((3, 5000))
    grid[1, 2345] = 1e4
    grid[2, :] = np.nan
    starts, stops, maxed = downsample.column_max(np.arange(5000), grid, 1000)
    assert maxed.shape == (3, 1000) and np.nanmax(maxed[1]) == 1e4 and np.isnan(maxed[2]).all()
    assert starts[0] == 0 and stops[-1] == 4999
    metrics = pd.DataFrame({"step": np.tile(np.arange(5000), 2), "key": ["a"] * 5000 + ["b"] * 5000,
                            "value": np.concatenate([grid[0], grid[1]])})
    fig = plots.heatmap(metrics, "grad norm", ["a", "b"])
    assert fig.axes[0].images[0].get_array().shape == (2, 1000)
    assert "max per step bucket" in fig.axes[0].get_title(loc="left")
