"""Tests for gradscope.analysis.noise: B_simple on linear regression with known noise."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gradscope.analysis import noise
from gradscope.analysis.samples import SampleReducer, SampleSummary, summarize

DIM, SIGMA, BATCH, STEPS = 5, 1.0, 64, 300


def _regression_gradients(rng: np.random.Generator) -> np.ndarray:
    """Per-sample gradients of 0.5 (x.w - y)^2 at w = w* + delta, |delta| = 1: (STEPS, B, d).

    g = x (x.delta - eps), so G = delta and, for x ~ N(0, I), E|g|^2 = (d + 2)|delta|^2 +
    d sigma^2, hence tr Sigma = (d + 1)|delta|^2 + d sigma^2 and B_simple = 11 here.
    """
    delta = np.eye(DIM)[0]
    x = rng.normal(size=(STEPS, BATCH, DIM))
    residual = x @ delta - rng.normal(scale=SIGMA, size=(STEPS, BATCH))
    return x * residual[..., None]


def _reference_b_simple() -> float:
    return ((DIM + 1) * 1.0 + DIM * SIGMA**2) / 1.0


def _tables(grads: np.ndarray) -> tuple[pd.DataFrame, SampleSummary]:
    steps, batch, _ = grads.shape
    norm2 = np.sum(grads**2, axis=2)
    samples = pd.DataFrame(
        {
            "step": np.repeat(np.arange(steps), batch),
            "micro": 0,
            "sample": np.tile(np.arange(batch), steps),
            "layer": "fc",
            "norm2": norm2.ravel(),
        }
    )
    total = grads.sum(axis=1)
    layers = pd.DataFrame({"step": np.arange(steps), "layer": "fc", "sum_norm2": np.sum(total**2, axis=1)})
    return layers, summarize(samples)


def test_b_simple_matches_linear_regression_noise_scale() -> None:
    grads = _regression_gradients(np.random.default_rng(0))
    rows = noise.noise_metrics(*_tables(grads), None, decay=0.995)
    model = rows[(rows["scope"] == "model") & (rows["name"] == "b_simple")].sort_values("step")
    # |G|^2 is estimated from 300 x 64 samples: relative error of the ratio is a few percent
    assert model["value"].iloc[-1] == pytest.approx(_reference_b_simple(), rel=0.1)
    raw = rows[(rows["scope"] == "model") & (rows["name"] == "b_simple_raw")]
    assert len(raw) == STEPS


def test_estimators_are_unbiased_on_average() -> None:
    grads = _regression_gradients(np.random.default_rng(1))
    total = grads.sum(axis=1)
    g2, trace = noise.noise_estimates(
        np.sum(total**2, axis=1), np.sum(grads**2, axis=(1, 2)), np.full(STEPS, BATCH)
    )
    assert g2.mean() == pytest.approx(1.0, rel=0.1)
    assert trace.mean() == pytest.approx(DIM + 1 + DIM * SIGMA**2, rel=0.05)


def _reference_cockpit(g: np.ndarray) -> dict[str, float]:
    """Byrd / Bollapragada tests written with the vectors themselves."""
    size, mean = len(g), g.mean(axis=0)
    mean2 = mean @ mean
    projections = g @ mean
    return {
        "norm_test": np.sqrt(np.sum((g - mean) ** 2) / ((size - 1) * size * mean2)),
        "inner_product_test": np.sqrt(np.var(projections, ddof=1) / (size * mean2**2)),
        "orthogonality_test": np.sqrt(
            np.sum((g - np.outer(projections / mean2, mean)) ** 2) / ((size - 1) * size * mean2)
        ),
    }


def test_cockpit_tests_match_vector_formulas() -> None:
    g = np.random.default_rng(2).normal(0.5, 1.0, size=(12, 6))
    assert noise.cockpit_tests(g @ g.T) == pytest.approx(_reference_cockpit(g))


def test_gsnr_matches_per_coordinate_formula() -> None:
    sketches = np.random.default_rng(3).normal(1.0, 2.0, size=(50, 8))
    m = len(sketches)
    ratios = [(m - 3) / (m - 1) * np.mean(c) ** 2 / np.var(c, ddof=1) - 1 / m for c in sketches.T]
    assert noise.gsnr(sketches) == pytest.approx(np.mean(ratios))
    assert np.isnan(noise.gsnr(np.ones((4, 3))))  # no variance: no finite GSNR
    assert np.isnan(noise.gsnr(sketches[:3]))  # m <= 3: the correction is undefined


def _gsnr_of_draws(batch: int, true_gsnr: float, coordinates: int, seed: int) -> tuple[float, float]:
    """(estimate, standard error) for ``batch`` Gaussian samples of ``coordinates``
    coordinates with mean sqrt(true_gsnr) and unit variance."""
    draws = np.random.default_rng(seed).normal(np.sqrt(true_gsnr), 1.0, size=(batch, coordinates))
    value, error = noise.gsnr_estimates(np.array([batch]), draws.sum(0)[None], (draws**2).sum(0)[None])
    return float(value[0]), float(error[0])


@pytest.mark.parametrize("batch", [8, 32])
def test_gsnr_of_pure_noise_reads_zero_within_its_standard_error(batch: int) -> None:
    # issue 14 item 2: the plug-in mean^2 / var read 0.17 at B = 8 and 0.034 at B = 32
    value, error = _gsnr_of_draws(batch, 0.0, 256, seed=batch)
    assert abs(value) < 2.5 * error
    plug_in = (1 / batch) * (batch - 1) / (batch - 3)  # the old estimator's expectation
    assert plug_in > 6 * error
    estimates = [_gsnr_of_draws(batch, 0.0, 64, seed=s)[0] for s in range(200)]
    assert abs(np.mean(estimates)) < 3 * np.std(estimates) / np.sqrt(len(estimates))


def test_planted_gsnr_is_recovered_within_its_standard_error() -> None:
    # issue 14 item 2: a true GSNR of 0.04 at B = 32 read 0.0755 before
    value, error = _gsnr_of_draws(32, 0.04, 256, seed=7)
    assert abs(value - 0.04) < 2.5 * error and error < 0.02
    estimates = [_gsnr_of_draws(32, 0.04, 64, seed=s)[0] for s in range(200)]
    assert abs(np.mean(estimates) - 0.04) < 3 * np.std(estimates) / np.sqrt(len(estimates))


def test_gsnr_standard_error_matches_spread_over_repeats() -> None:
    values, errors = zip(*(_gsnr_of_draws(16, 0.1, 128, seed=s) for s in range(100)), strict=True)
    assert np.median(errors) == pytest.approx(np.std(values), rel=0.25)


@pytest.mark.parametrize(
    ("batch", "scale", "level"), [(64, 11.0, "ok"), (500, 11.0, "warn"), (1, 11.0, "warn")]
)
def test_verdict_compares_batch_with_b_simple(batch: int, scale: float, level: str) -> None:
    rows = pd.DataFrame(
        {
            "step": [0, 0],
            "name": ["b_simple", "batch_size"],
            "scope": "model",
            "key": "",
            "value": [scale, float(batch)],
        }
    )
    assert noise.noise_verdict(rows).level == level
    assert "no data" in noise.noise_verdict(rows.iloc[:0]).summary


def test_gsnr_from_sketch_moments_streamed_in_batches_matches_gsnr() -> None:
    rng = np.random.default_rng(3)
    rows = [
        {"step": step, "layer": layer, "sketch": rng.normal(loc=0.3, size=4).astype(np.float32)}
        for step in range(3) for layer in ("a", "b") for _ in range(5)
    ]
    samples = pd.DataFrame(rows)
    reducer = SampleReducer()
    for part in (samples[:13], samples[13:]):  # the cut falls inside step 1
        reducer.add(part)
    result = noise.gsnr_rows(reducer.finish().sketch_moments).query("name == 'gsnr'")
    result = result.set_index(["step", "key"])["value"]
    for (step, layer), block in samples.groupby(["step", "layer"]):
        expected = noise.gsnr(np.stack(block["sketch"].to_list()).astype(np.float64))
        assert result[(step, layer)] == pytest.approx(expected, rel=1e-9)


def test_gsnr_se_matches_the_step_to_step_spread_on_a_one_output_layer(tmp_path):
    """Linear(64, 1) on pure noise: its k x k Kronecker sketch has only k distinct
    coordinates; the stated se once understated the observed spread ~3x."""
    import torch
    import torch.nn.functional as F

    import gradscope
    from gradscope.analysis.engine import analyze_tables
    from gradscope.store.reader import open_run

    torch.manual_seed(1)
    model = torch.nn.Linear(64, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-7)  # the weights stay ~0: pure noise
    with gradscope.Recorder(model, optimizer, run_dir=tmp_path / "run"):
        for _ in range(60):
            optimizer.zero_grad()
            F.mse_loss(model(torch.randn(32, 64)), torch.randn(32, 1)).backward()
            optimizer.step()
    run = open_run(tmp_path / "run")
    rows = analyze_tables({n: run.table(n) for n in ("steps", "layers", "samples")}, meta=run.meta).metrics
    layer = rows[rows["scope"] == "layer"]
    gsnr, se = layer[layer["name"] == "gsnr"]["value"], layer[layer["name"] == "gsnr_se"]["value"]
    assert abs(gsnr.mean()) < 3 * gsnr.std() / np.sqrt(len(gsnr))  # pure noise: about 0
    assert 1 / 1.5 < gsnr.std() / se.median() < 1.5
