"""Clipping and the spikes it hides, on synthetic STEPS / LAYERS with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gradscope.analysis.clipping import TENSOR_SPIKE, tensor_spike_ratios
from gradscope.analysis.stability import stability_metrics, stability_verdict


def _clipped_run(spike_at: int | None = 25, steps: int = 40, clip: float = 0.5) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    pre = np.exp(rng.normal(0.0, 0.2, steps))  # ~1: most steps clip at 0.5
    if spike_at is not None:
        pre[spike_at] = 3000.0
    return pd.DataFrame({"step": np.arange(steps), "loss": 1.0 + 0.01 * rng.normal(size=steps),
                         "grad_norm": np.minimum(pre, clip), "grad_norm_preclip": pre})


def _value(rows: pd.DataFrame, name: str, step: int) -> float:
    found = rows[(rows["name"] == name) & (rows["step"] == step) & (rows["scope"] == "model")]
    return float(found["value"].iloc[0])


def test_planted_spike_under_clipping_is_flagged():
    steps = _clipped_run()
    rows = stability_metrics(steps, None)
    assert _value(rows, "grad_norm_spike_z", 25) == pytest.approx(0.0, abs=1e-6)  # what the optimizer saw
    assert _value(rows, "grad_norm_preclip_spike_z", 25) > 20
    assert _value(rows, "clip_ratio", 25) == pytest.approx(0.5 / 3000)
    expected = float((steps["grad_norm_preclip"] > 0.5).mean())
    assert _value(rows, "clip_fraction", -1) == pytest.approx(expected)
    verdict = stability_verdict(rows)
    assert verdict.level == "warn" and verdict.metric == "stability.grad_norm_preclip_spike_z"
    assert "hidden by it" in verdict.summary and verdict.steps == (25,)


def test_clipped_run_without_spike_is_quiet():
    rows = stability_metrics(_clipped_run(spike_at=None), None)
    assert stability_verdict(rows).level == "ok"
    assert _value(rows, "clipped", 3) in (0.0, 1.0)


def test_unclipped_steps_read_ratio_one():
    steps = _clipped_run(spike_at=None, clip=1e9)
    rows = stability_metrics(steps, None)
    assert _value(rows, "clip_fraction", -1) == 0.0
    assert np.allclose(rows[rows["name"] == "clip_ratio"]["value"], 1.0)


def test_tensor_spike_ratio_against_running_scale():
    """A constant norm reads 1; a 100x spike in one tensor reads 100 / sqrt(v_hat) = 100."""
    steps = np.arange(30)
    layers = pd.concat([
        pd.DataFrame({"step": steps, "layer": "fc", "param": "fc.weight",
                      "sum_norm2": np.where(steps == 20, 1e4, 1.0)}),
        pd.DataFrame({"step": steps, "layer": "fc", "param": "fc.bias", "sum_norm2": 4.0}),
    ])
    ratios = tensor_spike_ratios(layers).set_index(["param", "step"])["ratio"]
    assert np.isnan(ratios["fc.weight", 5])  # too little history
    assert ratios["fc.weight", 20] == pytest.approx(100.0)
    assert ratios["fc.bias", 20] == pytest.approx(1.0)
    rows = stability_metrics(None, layers)
    spikes = rows[(rows["name"] == "tensor_spike_ratio") & (rows["scope"] == "param")]
    assert spikes["key"].tolist() == ["fc.weight"] and spikes["value"].iloc[0] > TENSOR_SPIKE
    assert "gradient spike in fc.weight" in stability_verdict(rows).summary
