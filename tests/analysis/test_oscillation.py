"""Tests for gradscope.analysis.oscillation: update oscillation and gradient autocorrelation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gradscope.analysis import oscillation
from gradscope.analysis.engine import analyze_tables
from gradscope.analysis.samples import summarize


def _gradient_descent_layers(lr: float, steps: int = 60, seed: int = 0) -> pd.DataFrame:
    """LAYERS rows with update sketches of gradient descent on 0.5 w^T H w, H diagonal with
    eigenvalues in [0.1, 1] (lambda_max = 1, so lr > 2 is past the stability edge), for a
    layer "fc" with parameters weight (40 numbers) and bias (10), sketched as the recorder
    does: one fixed projection per parameter, 16 numbers."""
    rng = np.random.default_rng(seed)
    curvature = np.linspace(0.1, 1.0, 50)
    w = rng.normal(size=50)
    projections = {"fc.weight": rng.normal(size=(16, 40)), "fc.bias": rng.normal(size=(16, 10))}
    rows = []
    for step in range(steps):
        update = -lr * curvature * w
        w = w + update
        for name, part in (("fc.weight", update[:40]), ("fc.bias", update[40:])):
            rows.append((step, "fc", name, (projections[name] @ part).astype(np.float32)))
    return pd.DataFrame(rows, columns=["step", "layer", "param", "update_sketch"])


def _later(rows: pd.DataFrame, name: str, scope: str) -> np.ndarray:
    chosen = rows[(rows["name"] == name) & (rows["scope"] == scope)].sort_values("step")
    return chosen["value"].to_numpy(float)[len(chosen) // 2 :]


def test_updates_past_two_over_lambda_oscillate_at_minus_one() -> None:
    rows = oscillation.update_oscillation_rows(_gradient_descent_layers(lr=2.2))
    assert _later(rows, "update_cos", "model") == pytest.approx(-1.0, abs=0.01)
    assert _later(rows, "update_cos", "layer") == pytest.approx(-1.0, abs=0.01)


def test_updates_below_one_over_lambda_keep_their_direction() -> None:
    rows = oscillation.update_oscillation_rows(_gradient_descent_layers(lr=0.5))
    assert (_later(rows, "update_cos", "model") > 0.9).all()


def test_update_oscillation_needs_consecutive_steps_and_the_column() -> None:
    layers = _gradient_descent_layers(lr=2.2)
    assert oscillation.update_oscillation_rows(layers[layers["step"] % 2 == 0]).empty
    assert oscillation.update_oscillation_rows(layers.drop(columns="update_sketch")).empty
    nulls = layers.assign(update_sketch=None)
    assert oscillation.update_oscillation_rows(nulls).empty


def test_update_oscillation_reaches_the_stability_family() -> None:
    layers = _gradient_descent_layers(lr=2.2).assign(grad_norm=1.0, weight_norm=1.0, update_norm=1.0)
    steps = pd.DataFrame({"step": range(60), "loss": 1.0})
    metrics = analyze_tables({"steps": steps, "layers": layers}).metrics
    chosen = metrics[(metrics["name"] == "update_cos") & (metrics["scope"] == "model")]
    assert set(chosen["family"]) == {"stability"}
    assert chosen["value"].iloc[-1] == pytest.approx(-1.0, abs=0.01)


def _sketched_samples(signs: list[float], batch: int = 32, seed: int = 0) -> pd.DataFrame:
    """SAMPLES rows whose per-sample gradients are sign_t * mu + noise (per-sample SNR 0.25),
    sketched by one fixed projection per layer."""
    rng = np.random.default_rng(seed)
    dim = 400
    mean = {layer: rng.normal(size=dim) / np.sqrt(dim) for layer in ("a", "b")}
    projection = {layer: rng.normal(size=(64, dim)) / 8.0 for layer in ("a", "b")}
    rows = []
    for step, sign in enumerate(signs):
        for layer in ("a", "b"):
            g = sign * mean[layer] + rng.normal(scale=2.0 / np.sqrt(dim), size=(batch, dim))
            sketch = (g @ projection[layer].T).astype(np.float32)
            rows += [(step, 0, i, layer, sketch[i]) for i in range(batch)]
    return pd.DataFrame(rows, columns=["step", "micro", "sample", "layer", "sketch"])


@pytest.mark.parametrize(("signs", "expected"), [([1.0] * 20, 1.0), ([1.0, -1.0] * 10, -1.0)])
def test_gradient_autocorrelation_follows_the_batch_gradient(signs: list[float], expected: float) -> None:
    moments = summarize(_sketched_samples(signs)).sketch_moments
    rows = oscillation.grad_autocorr_rows(moments, lags=(1, 2))
    lag1 = rows[(rows["name"] == "grad_autocorr") & (rows["scope"] == "model")]["value"]
    # batch-gradient cosine: m |mu|^2 / (m |mu|^2 + tr Sigma) = 32 / (32 + 4) in each layer
    assert np.mean(lag1) == pytest.approx(expected * 32 / 36, abs=0.05)
    lag2 = rows[(rows["name"] == "grad_autocorr_2") & (rows["scope"] == "layer")]["value"]
    assert np.mean(lag2) == pytest.approx(32 / 36, abs=0.05)
