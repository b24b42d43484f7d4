"""Tests for gradscope.analysis.stability: planted spikes, dead layers, non-finite values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gradscope.analysis import stability


def _run(steps: int = 60, spike_at: int = 40, dead: str = "blocks.1", dead_from: int = 30):
    rng = np.random.default_rng(0)
    loss = 2.0 * np.exp(-np.arange(steps) / 30) + 0.02 * rng.normal(size=steps)
    loss[spike_at] *= 5
    steps_table = pd.DataFrame(
        {"step": np.arange(steps), "loss": loss, "grad_norm": 1 + 0.05 * rng.random(steps)}
    )
    rows = []
    for step in range(steps):
        for layer in ("blocks.0", "blocks.1", "head"):
            grad = 0.0 if layer == dead and step >= dead_from else 0.5 + 0.1 * rng.random()
            update = 1e-3 * grad
            rows.append((step, layer, f"{layer}.weight", grad, 1.0, update, 0.01 * np.sqrt(step), False))
    columns = [
        "step",
        "layer",
        "param",
        "grad_norm",
        "weight_norm",
        "update_norm",
        "init_distance",
        "nonfinite",
    ]
    return steps_table, pd.DataFrame(rows, columns=columns)


def _reference_robust_z(values: np.ndarray, index: int, window: int = 20) -> float:
    history = values[max(0, index - window) : index]
    median = np.median(history)
    scale = max(1.4826 * np.median(np.abs(history - median)), 0.01 * abs(median))
    return float((values[index] - median) / (scale + 1e-12))


def test_robust_z_matches_reference() -> None:
    values = np.random.default_rng(1).normal(size=50)
    z = stability.robust_z(pd.Series(values)).to_numpy()
    for index in (10, 25, 49):
        assert z[index] == pytest.approx(_reference_robust_z(values, index))


def test_planted_loss_spike_and_dead_layer_found_at_right_steps() -> None:
    rows = stability.stability_metrics(*_run())
    verdict = stability.stability_verdict(rows)
    assert verdict.level == "warn"
    spikes = rows[(rows["name"] == "loss_spike_z") & (rows["value"] > stability.SPIKE_Z)]
    assert spikes["step"].tolist() == [40]
    dead = rows[rows["name"] == "dead"]
    assert set(dead["key"]) == {"blocks.1"} and dead["step"].tolist() == list(range(30, 60))
    assert any("dead layer blocks.1" in d for d in verdict.details)
    assert "loss spikes at step 40" in verdict.summary
    assert "warn: dead layer blocks.1 at steps 30-59 (30)" in verdict.details


def test_nonfinite_is_an_alert() -> None:
    steps, layers = _run()
    steps.loc[12, "loss"] = np.nan
    layers.loc[(layers["step"] == 13) & (layers["layer"] == "head"), "nonfinite"] = True
    verdict = stability.stability_verdict(stability.stability_metrics(steps, layers))
    assert verdict.level == "alert" and verdict.steps == (12, 13)


def test_update_ratio_and_init_distance_rows() -> None:
    rows = stability.stability_metrics(*_run(dead_from=1000, spike_at=0))
    ratio = rows[rows["name"] == "update_ratio"]["value"]
    assert ratio.to_numpy() == pytest.approx(ratio.to_numpy() * 0 + ratio.median(), rel=0.3)
    assert len(rows[rows["name"] == "init_distance_log_slope"]) == 1
    assert stability.stability_verdict(rows).level == "ok"


def test_missing_tables_give_no_data() -> None:
    rows = stability.stability_metrics(None, None)
    assert rows.empty and "no data" in stability.stability_verdict(rows).summary


def test_robust_z_log_scale_matches_reference_on_logs() -> None:
    values = np.random.default_rng(2).lognormal(0.0, 0.2, size=50)
    z = stability.robust_z(pd.Series(values), log=True).to_numpy()
    logs = np.log(values)
    for index in (10, 25, 49):
        history = logs[max(0, index - 20) : index]
        scale = max(1.4826 * np.median(np.abs(history - np.median(history))), 0.01)
        assert z[index] == pytest.approx((logs[index] - np.median(history)) / (scale + 1e-12))
    assert np.isnan(z[:10]).all(), "fewer than MIN_HISTORY previous values give no score"


def test_noisy_minibatch_grad_norms_are_not_spikes_but_a_jump_is() -> None:
    """Skewed i.i.d. noise (the clinic's false alarm) stays quiet; a 5x jump still fires."""
    rng = np.random.default_rng(3)
    quiet = 0
    for _ in range(50):
        steps = pd.DataFrame({"step": np.arange(40), "grad_norm": rng.lognormal(0.0, 0.15, 40)})
        z = stability.stability_metrics(steps, None)
        quiet += not (z[z["name"] == "grad_norm_spike_z"]["value"] > stability.SPIKE_Z).any()
    assert quiet >= 48
    norms = rng.lognormal(0.0, 0.15, 40)
    norms[30] *= 5
    rows = stability.stability_metrics(pd.DataFrame({"step": np.arange(40), "grad_norm": norms}), None)
    spikes = rows[(rows["name"] == "grad_norm_spike_z") & (rows["value"] > stability.SPIKE_Z)]
    assert spikes["step"].tolist() == [30]


@pytest.mark.parametrize(("ratio", "level"), [(3e-2, "ok"), (5e-5, "ok"), (0.3, "warn"), (1e-6, "warn")])
def test_update_ratio_band_is_two_decades_around_1e_3(ratio: float, level: str) -> None:
    steps, layers = _run(dead_from=1000, spike_at=0)
    layers["update_norm"] = ratio * layers["weight_norm"]
    verdict = stability.stability_verdict(stability.stability_metrics(steps, layers))
    assert verdict.level == level, verdict.details


def test_one_step_is_too_few_but_a_non_finite_one_still_alerts() -> None:
    steps = pd.DataFrame({"step": [0], "loss": [1.0], "grad_norm": [1.0]})
    verdict = stability.stability_verdict(stability.stability_metrics(steps, None))
    assert (verdict.level, verdict.reason) == ("no data", "too few steps")
    steps.loc[0, "loss"] = np.inf
    assert stability.stability_verdict(stability.stability_metrics(steps, None)).level == "alert"


def test_spike_scores_skip_the_steps_a_cadence_did_not_record():
    """--every 5: grad_norm is NaN between recorded steps; the spike at a recorded step still scores."""
    rng = np.random.default_rng(0)
    dense = pd.Series(np.exp(rng.normal(0.0, 0.1, 40)))
    dense.iloc[-1] = 50.0
    sparse = pd.Series(np.nan, index=range(200))
    sparse.iloc[::5] = dense.to_numpy()
    z_sparse = stability.robust_z(sparse, log=True)
    z_dense = stability.robust_z(dense, log=True)
    assert np.allclose(z_sparse.iloc[::5].to_numpy(), z_dense.to_numpy(), equal_nan=True)
    assert z_sparse.iloc[195] > 20 and z_sparse.iloc[1:5].isna().all()


def _steps_frame(norms):
    return pd.DataFrame({"step": range(len(norms)), "loss": [1.0] * len(norms),
                         "grad_norm": [min(n, 1.0) for n in norms], "grad_norm_preclip": norms})


def test_a_spike_in_the_warm_up_window_is_flagged_by_the_ratio_rule():
    rng = np.random.default_rng(0)
    norms = list(np.exp(rng.normal(0, 0.3, 40)))
    norms[3] = 500.0  # before robust_z has MIN_HISTORY previous values: never z-scored
    rows = stability.stability_metrics(_steps_frame(norms), None)
    z = rows[(rows["name"] == "grad_norm_preclip_spike_z") & (rows["step"] == 3)]["value"]
    assert z.isna().all()
    verdict = stability.stability_verdict(rows)
    assert verdict.level == "warn" and verdict.metric == "stability.grad_norm_warmup_ratio"
    assert 3 in verdict.steps and "warm-up" in verdict.summary


def test_an_ok_verdict_says_from_which_step_spikes_were_scored():
    rng = np.random.default_rng(1)
    rows = stability.stability_metrics(_steps_frame(list(np.exp(rng.normal(0, 0.3, 40)))), None)
    verdict = stability.stability_verdict(rows)
    assert verdict.level == "ok"
    assert f"z-scored from step {stability.MIN_HISTORY} on" in verdict.summary
    assert "warm-up rule" in verdict.summary
