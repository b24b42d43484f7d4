"""Tests for the epsilon-free cosines (issue 14 item 6) and signal group cosines (item 3)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gradscope.analysis import alignment, coherence, conflict
from gradscope.analysis.cosines import cosine, signal_cosine
from gradscope.analysis.samples import summarize


@pytest.mark.parametrize("scale", [1.0, 1e-4, 1e-8, 1e-30])
def test_cosines_of_tiny_gradients_keep_their_value(scale: float) -> None:
    # issue 14 item 6: max(|a||b|, 1e-12) read cos * |a||b| / 1e-12 once |a||b| < 1e-12
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=20) * scale, rng.normal(size=20) * scale
    expected = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    assert float(cosine(a @ b, a @ a, b @ b)) == pytest.approx(expected, rel=1e-9)
    gram = np.stack([a, b]) @ np.stack([a, b]).T
    assert coherence.stiffness(gram)["stiffness_cos"] == pytest.approx(expected, rel=1e-9)
    score = alignment.gwa(np.array(a @ b), np.array(a @ a), np.array(np.linalg.norm(b)))
    assert float(score) == pytest.approx(-expected, rel=1e-9)


def test_cosine_with_a_zero_gradient_is_undefined_not_zero() -> None:
    assert np.isnan(cosine(0.0, 0.0, 1.0)) and np.isnan(cosine(1.0, np.inf, 1.0))
    assert np.isnan(alignment.gwa(np.array([0.0]), np.array([0.0]), np.array([2.0]))[0])
    tasks = pd.DataFrame([(0, "shared", ["a", "b"], [1e-18, -1e-18, -1e-18, 1e-18])],
                         columns=["step", "layer", "tasks", "values"])
    rows = conflict.conflict_metrics(tasks)  # norms 1e-9: conflict still seen
    cos = rows[(rows["name"] == "cos") & (rows["scope"] == "task_pair")]["value"]
    assert cos.tolist() == pytest.approx([-1.0])


def _identical_mean_groups(size: int, steps: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """GRAM and SAMPLES rows for two groups of ``size`` samples each, whose per-sample
    gradients share one mean mu (|mu| = 1) plus noise of trace 9 (per-sample SNR 0.11,
    as in the issue's simulation); sketches are a fixed 256-dim Gaussian projection."""
    rng = np.random.default_rng(seed)
    dim, width = 2000, 256
    mean = rng.normal(size=dim) / np.sqrt(dim)
    projection = rng.normal(size=(width, dim)) / np.sqrt(width)
    grams, samples = [], []
    labels = np.repeat([0, 1], size)
    for step in range(steps):
        g = mean + rng.normal(scale=3.0 / np.sqrt(dim), size=(2 * size, dim))
        grams.append((step, 0, "fc", 2 * size, (g @ g.T).ravel().tolist()))
        sketch = (g @ projection.T).astype(np.float32)
        samples += [(step, 0, i, "fc", float(g[i] @ g[i]), int(labels[i]), sketch[i])
                    for i in range(2 * size)]
    gram = pd.DataFrame(grams, columns=["step", "micro", "layer", "size", "values"])
    columns = ["step", "micro", "sample", "layer", "norm2", "group", "sketch"]
    return gram, pd.DataFrame(samples, columns=columns)


def _group_values(rows: pd.DataFrame, name: str) -> np.ndarray:
    return rows[(rows["name"] == name) & (rows["scope"] == "group_pair")]["value"].to_numpy(float)


@pytest.mark.parametrize(("size", "plug_in"), [(4, 0.31), (16, 0.64), (64, 0.88)])
def test_groups_with_identical_mean_gradients_read_about_one(size: int, plug_in: float) -> None:
    # issue 14 item 3: the plug-in cosine of the group sums read 0.31, 0.64, 0.88
    gram, samples = _identical_mean_groups(size, steps=30, seed=size)
    summary = summarize(samples)
    exact = conflict.conflict_metrics(None, None, gram, summary)
    batch = _group_values(exact, "group_cos_batch")
    assert np.mean(batch) == pytest.approx(plug_in, abs=0.08)
    signal = _group_values(exact, "group_cos")
    assert np.nanmean(signal) == pytest.approx(1.0, abs=0.05) and np.isfinite(signal).mean() > 0.8
    sketched = conflict.conflict_metrics(None, None, None, summary)  # no GRAM: sketch sums
    assert np.nanmedian(_group_values(sketched, "group_cos")) == pytest.approx(1.0, abs=0.15)


def test_opposite_groups_read_minus_one_and_small_groups_have_no_signal_cosine() -> None:
    gram, samples = _identical_mean_groups(16, steps=10, seed=1)
    flipped = gram.assign(values=[
        (np.asarray(v).reshape(32, 32) * np.outer(np.repeat([1, -1], 16), np.repeat([1, -1], 16))).ravel()
        for v in gram["values"]
    ])
    rows = conflict.conflict_metrics(None, None, flipped, summarize(samples))
    assert np.nanmedian(_group_values(rows, "group_cos")) == pytest.approx(-1.0, abs=0.1)
    assert np.isnan(signal_cosine(1.0, 0.0, 1.0, (1, 0, 2)))  # one-sample group: no within-pair


def test_micro_distance_from_sketches_matches_the_gram_route() -> None:
    rng = np.random.default_rng(4)
    projection = rng.normal(size=(512, 30)) / np.sqrt(512)  # a near-isometry: sketches ~ exact
    g = rng.normal(size=(2, 6, 30)) + np.array([1.0, -0.5])[:, None, None]
    rows = [(0, u, i, "fc", (projection @ g[u, i]).astype(np.float32)) for u in range(2) for i in range(6)]
    samples = pd.DataFrame(rows, columns=["step", "micro", "sample", "layer", "sketch"])
    result = coherence.sketch_micro_rows(summarize(samples).micro_sketch)
    first, second = g[0].sum(0), g[1].sum(0)
    expected = 1 - first @ second / np.linalg.norm(first) / np.linalg.norm(second)
    assert result["value"].tolist() == pytest.approx([expected, expected], abs=0.1)
