"""Tests for gradscope.analysis.conflict: task cosines, MGDA, group Gram, per-sample conflict."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from gradscope.analysis import conflict
from gradscope.analysis.samples import summarize


def _tasks(vectors: dict[str, np.ndarray], steps: int = 4, head: bool = False) -> pd.DataFrame:
    """TASKS rows for a shared layer (and optionally a head only task "a" reaches)."""
    names = list(vectors)
    stacked = np.stack([vectors[n] for n in names])
    rows = [(s, "shared", names, (stacked @ stacked.T).ravel().tolist()) for s in range(steps)]
    if head:
        only_a = np.zeros((len(names), 3))
        only_a[0] = 5.0
        rows += [(s, "head_a", names, (only_a @ only_a.T).ravel().tolist()) for s in range(steps)]
    return pd.DataFrame(rows, columns=["step", "layer", "tasks", "values"])


def _model_cos(rows: pd.DataFrame) -> float:
    chosen = rows[(rows["name"] == "cos") & (rows["scope"] == "task_pair")]
    return float(chosen["value"].iloc[0])


@pytest.mark.parametrize(
    ("b", "expected", "level"),
    [([-1.0, -2.0], -1.0, "alert"), ([2.0, -1.0], 0.0, "ok"), ([3.0, 6.0], 1.0, "ok")],
)
def test_opposite_orthogonal_agreeing(b: list[float], expected: float, level: str) -> None:
    rows = conflict.conflict_metrics(_tasks({"a": np.array([1.0, 2.0]), "b": np.array(b)}, head=True))
    assert _model_cos(rows) == pytest.approx(expected, abs=1e-12)
    verdict = conflict.conflict_verdict(rows)
    assert verdict.level == level
    if level == "alert":
        assert verdict.steps == (0, 1, 2, 3) and "severe" in verdict.summary
    layer_keys = set(rows[rows["scope"] == "layer"]["key"])
    assert layer_keys == {"shared@a|b"}  # the head only "a" reaches is excluded


def _reference_mgda(gram: np.ndarray, resolution: int = 200) -> float:
    best = np.inf
    for i, j in itertools.product(range(resolution + 1), repeat=2):
        if i + j <= resolution:
            w = np.array([i, j, resolution - i - j]) / resolution
            best = min(best, w @ gram @ w)
    return float(np.sqrt(best))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mgda_matches_brute_force_grid_for_three_tasks(seed: int) -> None:
    g = np.random.default_rng(seed).normal(size=(3, 4))
    value, weights = conflict.mgda(g @ g.T)
    assert weights.sum() == pytest.approx(1.0) and (weights >= 0).all()
    assert value == pytest.approx(np.linalg.norm(weights @ g))
    assert value <= _reference_mgda(g @ g.T) + 1e-12
    assert value == pytest.approx(_reference_mgda(g @ g.T), abs=2e-2)


def test_mgda_two_tasks_closed_form() -> None:
    value, weights = conflict.mgda(np.array([[4.0, 0.0], [0.0, 1.0]]))
    assert weights == pytest.approx([0.2, 0.8]) and value == pytest.approx(np.sqrt(0.8))


def test_group_gram_equals_sums_of_vectors() -> None:
    rng = np.random.default_rng(3)
    g, labels = rng.normal(size=(9, 5)), rng.integers(0, 3, size=9)
    names, block = conflict.group_gram(g @ g.T, labels)
    sums = np.stack([g[labels == n].sum(axis=0) for n in names])
    assert block == pytest.approx(sums @ sums.T)


def test_group_cos_from_gram_and_samples() -> None:
    g = np.array([[1.0, 0.0], [1.0, 0.1], [-1.0, 0.0], [-1.0, -0.1]])
    gram = pd.DataFrame(
        [(0, 0, "fc", 4, (g @ g.T).ravel().tolist())], columns=["step", "micro", "layer", "size", "values"]
    )
    samples = pd.DataFrame({"step": 0, "micro": 0, "sample": range(4), "layer": "fc", "group": [0, 0, 1, 1]})
    rows = conflict.conflict_metrics(None, None, gram, summarize(samples))
    assert rows[rows["name"] == "group_cos"]["value"].iloc[0] == pytest.approx(-1.0)
    assert conflict.conflict_verdict(rows).level == "alert"


def test_sample_cos_finds_noisiest_samples() -> None:
    rows = []
    for sample, dot in enumerate([1.0, -0.9, 0.5]):
        rows.append((0, sample, "shared", "a", "b", dot, 1.0, 1.0))
        rows.append((0, sample, "head", "a", "b", 0.0, 1.0, 0.0))  # b does not reach: excluded
    columns = ["step", "sample", "layer", "task_a", "task_b", "dot", "norm2_a", "norm2_b"]
    out = conflict.conflict_metrics(None, pd.DataFrame(rows, columns=columns), worst=2)
    worst = out[(out["name"] == "sample_cos") & (out["scope"] == "sample")]
    assert worst["key"].tolist() == ["0:-1:1", "0:-1:2"]
    assert worst["value"].tolist() == pytest.approx([-0.9, 0.5])


def test_no_tasks_is_no_data() -> None:
    assert "no data" in conflict.conflict_verdict(conflict.conflict_metrics(None)).summary
