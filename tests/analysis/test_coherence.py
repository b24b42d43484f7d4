"""Tests for gradscope.analysis.coherence against direct per-sample-vector oracles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gradscope.analysis import coherence
from gradscope.analysis.samples import summarize


def _tables(grads: np.ndarray, micro_size: int | None = None, sum_norm2: bool = True):
    """LAYERS, the SAMPLES summary, GRAM for one layer from per-sample gradients (steps, m, P)."""
    samples, layers, gram = [], [], []
    for step, g in enumerate(grads):
        size = micro_size or len(g)
        for micro, start in enumerate(range(0, len(g), size)):
            block = g[start : start + size]
            gram.append((step, 0, micro, "fc", len(block), True, (block @ block.T).ravel().tolist()))
            for i, vector in enumerate(block):
                samples.append((step, 0, micro, i, "fc", float(vector @ vector), 0.0, np.nan, -1, None))
        total = g.sum(axis=0)
        row = (step, 0, "fc", "fc.weight", 1.0, 1.0, 0.1, 0.0, False)
        layers.append(row + ((float(total @ total),) if sum_norm2 else ()))
    layer_columns = ["step", "rank", "layer", "param", "grad_norm", "weight_norm", "update_norm"]
    layer_columns += ["init_distance", "nonfinite"] + (["sum_norm2"] if sum_norm2 else [])
    sample_columns = ["step", "rank", "micro", "sample", "layer", "norm2"]
    sample_columns += ["weight_dot", "loss", "group", "sketch"]
    return (
        pd.DataFrame(layers, columns=layer_columns),
        summarize(pd.DataFrame(samples, columns=sample_columns)),
        pd.DataFrame(gram, columns=["step", "rank", "micro", "layer", "size", "exact", "values"]),
    )


def _value(rows: pd.DataFrame, name: str, scope: str = "model") -> np.ndarray:
    return rows[(rows["name"] == name) & (rows["scope"] == scope)].sort_values("step")["value"].to_numpy()


def _reference_coherence(g: np.ndarray) -> tuple[float, float]:
    """(m-coherence, diversity) straight from the vectors: m |mean g|^2 / mean |g_i|^2."""
    mean = g.mean(axis=0)
    ratio = (mean @ mean) / np.mean(np.sum(g * g, axis=1))
    return len(g) * ratio, 1.0 / (len(g) * ratio)


def _reference_stiffness(matrix: np.ndarray) -> tuple[float, float]:
    size = len(matrix)
    signs, cosines = [], []
    for i in range(size):
        for j in range(size):
            if i != j:
                signs.append(np.sign(matrix[i, j]))
                cosines.append(matrix[i, j] / np.sqrt(matrix[i, i] * matrix[j, j]))
    return float(np.mean(signs)), float(np.mean(cosines))


@pytest.mark.parametrize("m", [2, 8, 32])
def test_identical_gradients_give_m_coherence_m(m: int) -> None:
    grads = np.tile(np.arange(1.0, 6.0), (1, m, 1))
    rows = coherence.coherence_metrics(*_tables(grads))
    assert _value(rows, "m_coherence") == pytest.approx([m])
    assert _value(rows, "alpha") == pytest.approx([1.0])
    assert _value(rows, "stiffness_cos") == pytest.approx([1.0])


def test_orthogonal_gradients_give_m_coherence_one() -> None:
    grads = (np.eye(6) * np.arange(1.0, 7.0)[:, None])[None]
    rows = coherence.coherence_metrics(*_tables(grads))
    assert _value(rows, "m_coherence") == pytest.approx([1.0])
    assert _value(rows, "gradient_diversity") == pytest.approx([1.0])
    assert _value(rows, "alpha_unbiased") == pytest.approx([0.0])
    assert _value(rows, "stiffness_sign") == pytest.approx([0.0])


def test_random_gradients_match_reference_and_gram_fallback() -> None:
    grads = np.random.default_rng(0).normal(0.3, 1.0, size=(3, 10, 7))
    rows = coherence.coherence_metrics(*_tables(grads))
    assert (coherence.step_moments(*_tables(grads))["source"] == "sum_norm2").all()
    fallback = coherence.coherence_metrics(*_tables(grads, sum_norm2=False))
    expected = np.array([_reference_coherence(g) for g in grads])
    assert _value(rows, "m_coherence") == pytest.approx(expected[:, 0])
    assert _value(rows, "gradient_diversity") == pytest.approx(expected[:, 1])
    assert _value(fallback, "m_coherence") == pytest.approx(expected[:, 0])
    stiff = np.array([_reference_stiffness(g @ g.T) for g in grads])
    assert _value(rows, "stiffness_sign") == pytest.approx(stiff[:, 0])
    assert _value(rows, "stiffness_cos") == pytest.approx(stiff[:, 1])


def test_micro_distance_is_one_minus_cosine_of_micro_batch_sums() -> None:
    grads = np.random.default_rng(1).normal(size=(2, 8, 5))
    rows = coherence.coherence_metrics(*_tables(grads, micro_size=4))
    first, second = grads[:, :4].sum(axis=1), grads[:, 4:].sum(axis=1)
    cos = np.sum(first * second, axis=1) / np.linalg.norm(first, axis=1) / np.linalg.norm(second, axis=1)
    assert _value(rows, "micro_distance") == pytest.approx(1 - cos)


def test_zero_gradient_sample_has_no_cosine_and_verdict_warns() -> None:
    # issue 14 item 6: a zero gradient has no direction; its pairs leave S_cos (was 0)
    assert np.isnan(coherence.stiffness(np.diag([1.0, 0.0]))["stiffness_cos"])
    assert coherence.stiffness(np.diag([1.0, 1.0, 0.0]))["stiffness_cos"] == 0.0
    grads = np.eye(5)[None].repeat(4, axis=0)
    verdict = coherence.coherence_verdict(coherence.coherence_metrics(*_tables(grads)))
    assert verdict.level == "warn" and verdict.value == pytest.approx(1.0)


def test_missing_inputs_give_no_rows_and_no_data_verdict() -> None:
    rows = coherence.coherence_metrics(None, None, None)
    assert rows.empty and list(rows.columns) == list(coherence.ROW_COLUMNS)
    assert "no data" in coherence.coherence_verdict(rows).summary
