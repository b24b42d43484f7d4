"""Tests for gradscope.analysis.engine: the whole pipeline on small synthetic tables."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import numpy as np
import pandas as pd

import gradscope.analysis
from gradscope.analysis.engine import Analysis, analyze_tables
from gradscope.analysis.types import FAMILIES, LEVELS, METRIC_COLUMNS


def _tables(steps: int = 12, batch: int = 8) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(0)
    layer_rows, sample_rows, gram_rows, task_rows = [], [], [], []
    for step in range(steps):
        for layer, size in (("body", 6), ("head", 3)):
            weight = rng.normal(size=size)
            g = rng.normal(0.5, 1.0, size=(batch, size))
            total = g.sum(axis=0)
            layer_rows.append(
                (
                    step,
                    0,
                    layer,
                    f"{layer}.weight",
                    1.0,
                    float(np.linalg.norm(weight)),
                    1e-3,
                    0.1,
                    False,
                    float(total @ total),
                )
            )
            gram_rows.append((step, 0, 0, layer, batch, True, (g @ g.T).ravel().tolist()))
            for i, v in enumerate(g):
                sketch = np.asarray(v[:3], dtype=np.float32)
                sample_rows.append(
                    (step, 0, 0, i, layer, float(v @ v), float(v @ weight), 1.0, i % 2, sketch)
                )
            task_rows.append((step, 0, layer, ["x", "y"], [1.0, -0.2, -0.2, 1.0]))
    return {
        "steps": pd.DataFrame(
            {"step": range(steps), "rank": 0, "loss": np.linspace(2, 1, steps), "grad_norm": 1.0}
        ),
        "layers": pd.DataFrame(
            layer_rows,
            columns=[
                "step",
                "rank",
                "layer",
                "param",
                "grad_norm",
                "weight_norm",
                "update_norm",
                "init_distance",
                "nonfinite",
                "sum_norm2",
            ],
        ),
        "samples": pd.DataFrame(
            sample_rows,
            columns=[
                "step",
                "rank",
                "micro",
                "sample",
                "layer",
                "norm2",
                "weight_dot",
                "loss",
                "group",
                "sketch",
            ],
        ),
        "gram": pd.DataFrame(
            gram_rows, columns=["step", "rank", "micro", "layer", "size", "exact", "values"]
        ),
        "tasks": pd.DataFrame(task_rows, columns=["step", "rank", "layer", "tasks", "values"]),
    }


def test_analyze_full_run() -> None:
    result = analyze_tables(_tables(), run="r1", meta={"steps_per_epoch": 4})
    assert isinstance(result, Analysis)
    assert tuple(result.metrics.columns) == METRIC_COLUMNS
    assert tuple(v.family for v in result.verdicts) == FAMILIES
    assert all(v.level in LEVELS and "analysis failed" not in v.summary for v in result.verdicts)
    names = set(result.metrics["family"] + "." + result.metrics["name"])
    assert {
        "coherence.m_coherence",
        "noise.b_simple",
        "noise.gsnr",
        "alignment.gwa_head",
        "alignment.epoch_score",
        "conflict.cos",
        "conflict.mgda_norm",
        "stability.loss",
    } <= names
    assert (result.metrics["run"] == "r1").all()
    assert result.metrics["name"].str.fullmatch(r"[a-z0-9_]+").all()


def test_missing_tables_and_columns_do_not_crash() -> None:
    empty = analyze_tables({})
    assert empty.metrics.empty and tuple(empty.metrics.columns) == METRIC_COLUMNS
    assert all(v.level == "no data" and "no training step" in v.summary for v in empty.verdicts)
    tables = _tables()
    tables["layers"] = tables["layers"].drop(columns=["sum_norm2"])
    tables["samples"] = tables["samples"].drop(columns=["sketch", "group"])
    partial = analyze_tables(tables)
    assert "m_coherence" in set(partial.metrics["name"])  # S1 from the Gram
    assert all("analysis failed" not in v.summary for v in partial.verdicts)


def test_no_module_imports_torch() -> None:
    modules = [m.name for m in pkgutil.iter_modules(gradscope.analysis.__path__, "gradscope.analysis.")]
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "assert 'torch' not in sys.modules, 'torch'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "gradscope.analysis.engine" in modules


def test_epoch_starts_from_the_recorder_become_a_step_to_epoch_mapping() -> None:
    from gradscope.analysis.engine import _epochs

    mapping = _epochs({"epoch_starts": [0, 4, 8], "steps": 10})
    assert [mapping[s] for s in range(10)] == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert _epochs({"epoch_starts": [0], "steps": 10}) is None  # one epoch: no boundary
