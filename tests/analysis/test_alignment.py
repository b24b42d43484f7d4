"""Tests for gradscope.analysis.alignment (GWA) against the authors' formula."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kurtosis

from gradscope.analysis import alignment
from gradscope.analysis.samples import summarize


def _reference_epoch_score(scores: np.ndarray) -> float:
    """The GWA authors' score: mean / (scipy.stats.kurtosis defaults + 1.2)."""
    return float(np.mean(scores) / (kurtosis(scores) + 1.2))


def _tables(rng: np.random.Generator, steps: int = 6, batch: int = 16):
    """Two layers, "body" and "head"; per-sample gradient vectors and weights drawn at random."""
    samples, layers, vectors = [], [], {}
    for step in range(steps):
        for layer, size in (("body", 7), ("head", 4)):
            weight = rng.normal(size=size)
            layers.append((step, layer, float(np.linalg.norm(weight))))
            grads = rng.normal(size=(batch, size)) - 0.1 * step * weight
            for i, g in enumerate(grads):
                samples.append((step, 0, i, layer, float(g @ g), float(g @ weight)))
                vectors[(step, i, layer)] = (g, weight)
    return (
        pd.DataFrame(samples, columns=["step", "micro", "sample", "layer", "norm2", "weight_dot"]),
        pd.DataFrame(layers, columns=["step", "layer", "weight_norm"]),
        vectors,
    )


def _reference_gwa(g: np.ndarray, weight: np.ndarray) -> float:
    return float(-(g @ weight) / (np.linalg.norm(g) * np.linalg.norm(weight)))


def test_gwa_means_and_worst_samples_match_cosines_of_vectors() -> None:
    samples, layers, vectors = _tables(np.random.default_rng(0))
    summary = summarize(samples, layers=layers, head="head", worst=5)
    means = summary.gwa.set_index(["step", "layer"])["gwa"]
    for step in range(6):
        for layer in ("body", "head"):
            expected = np.mean([_reference_gwa(*vectors[(step, i, layer)]) for i in range(16)])
            assert means[(step, layer)] == pytest.approx(expected)
        model = []
        for i in range(16):
            g = np.concatenate([vectors[(step, i, name)][0] for name in ("body", "head")])
            w = np.concatenate([vectors[(step, i, name)][1] for name in ("body", "head")])
            model.append(_reference_gwa(g, w))
        assert means[(step, "")] == pytest.approx(np.mean(model))
    head = sorted(_reference_gwa(*v) for (_, _, layer), v in vectors.items() if layer == "head")
    assert summary.misaligned["gwa"].tolist() == pytest.approx(head[:5])


def test_epoch_score_equals_authors_formula() -> None:
    scores = np.random.default_rng(1).normal(0.2, 0.1, size=200) ** 3
    assert alignment.epoch_score(scores) == pytest.approx(_reference_epoch_score(scores))
    assert alignment.excess_kurtosis(scores) == pytest.approx(kurtosis(scores))


def test_epoch_score_guards_uniform_denominator_and_constant_scores() -> None:
    assert np.isfinite(alignment.epoch_score(np.array([0.0, 1.0] * 3 + [0.5])))
    assert np.isnan(alignment.epoch_score(np.full(5, 0.3)))


def test_metrics_epoch_scores_and_early_stop_on_head() -> None:
    samples, layers, vectors = _tables(np.random.default_rng(2))
    epochs = {step: step // 2 for step in range(6)}
    rows = alignment.alignment_metrics(summarize(samples, layers=layers, head="head", epochs=epochs))
    scores = rows[rows["name"] == "epoch_score"].set_index("key")["value"]
    for epoch in range(3):
        chosen = [_reference_gwa(*vectors[(step, i, "head")]) for step in (2 * epoch, 2 * epoch + 1)
                  for i in range(16)]
        assert scores[str(epoch)] == pytest.approx(_reference_epoch_score(np.array(chosen)))
    best = rows[rows["name"] == "early_stop_epoch"]["value"].iloc[0]
    assert best == float(scores.astype(float).idxmax())
    assert len(rows[rows["name"] == "misaligned"]) == 20
    assert set(rows["name"]) >= {"gwa", "gwa_head", "epoch_score", "early_stop_epoch"}


def test_verdict_warns_after_the_peak() -> None:
    rows = pd.DataFrame(
        {
            "step": -1,
            "name": "epoch_score",
            "scope": "epoch",
            "key": ["0", "1", "2"],
            "value": [1.0, 2.0, 1.0],
        }
    )
    verdict = alignment.alignment_verdict(rows)
    assert verdict.level == "warn" and "epoch 1" in verdict.summary
    assert "no data" in alignment.alignment_verdict(rows.iloc[:1]).summary


def test_head_score_uses_the_weight_alone_as_the_paper_does() -> None:
    """Head rows carry norm2 / weight_dot over weight + bias and norm2_w / weight_dot_w over
    the weight alone; gwa_head is cos(-g_W, W) (bias excluded), gwa_head_all_params the
    other, and the most misaligned samples are named by dataset index."""
    rng = np.random.default_rng(3)
    samples, layers, expected, everything = [], [], [], []
    for step in range(4):
        weight, bias = rng.normal(size=6), rng.normal(size=2)
        layers += [(step, "head", "head.weight", float(np.linalg.norm(weight))),
                   (step, "head", "head.bias", float(np.linalg.norm(bias)))]
        for i in range(8):
            g_w, g_b = rng.normal(size=6) - 0.3 * weight, rng.normal(size=2) + 3 * bias
            both = (float(g_w @ g_w + g_b @ g_b), float(g_w @ weight + g_b @ bias))
            samples.append((step, 0, i, "head", *both, float(g_w @ g_w), float(g_w @ weight), 100 * step + i))
            expected.append(_reference_gwa(g_w, weight))
            everything.append(_reference_gwa(np.concatenate([g_w, g_b]), np.concatenate([weight, bias])))
    columns = ["step", "micro", "sample", "layer", "norm2", "weight_dot", "norm2_w", "weight_dot_w", "index"]
    summary = summarize(pd.DataFrame(samples, columns=columns), head="head", worst=3,
                        layers=pd.DataFrame(layers, columns=["step", "layer", "param", "weight_norm"]))
    assert summary.head_basis == "weight"
    rows = alignment.alignment_metrics(summary)
    head = rows[rows["name"] == "gwa_head"].sort_values("step")["value"]
    whole = rows[rows["name"] == "gwa_head_all_params"].sort_values("step")["value"]
    assert head.tolist() == pytest.approx(np.reshape(expected, (4, 8)).mean(axis=1))
    assert whole.tolist() == pytest.approx(np.reshape(everything, (4, 8)).mean(axis=1))
    worst = np.argsort(expected)[:3]
    keys = rows[rows["name"] == "misaligned"]["key"].tolist()
    assert keys == [f"{k // 8}:0:{k % 8} #{100 * (k // 8) + k % 8}" for k in worst]
