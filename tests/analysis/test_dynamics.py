"""Tests for gradscope.analysis.dynamics: forgetting events, first-learned steps, flagged samples."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from gradscope.analysis.dynamics import LearningDynamics
from gradscope.analysis.engine import analyze_tables
from gradscope.analysis.samples import SampleReducer


def _epochs(dataset: int = 64, batch: int = 16, epochs: int = 12, flip: int = 7) -> pd.DataFrame:
    """SAMPLES rows of a shuffled classification run, two layer rows per sample: every
    sample's cross-entropy falls from 2.3 to about 0.05 over the epochs, except sample
    ``flip``, whose label flips at epoch 6 (its loss jumps to 3.0, then falls again) and
    sample 13, whose label is noise (never learned: loss stays about 2)."""
    rng = np.random.default_rng(0)
    rows, step = [], 0
    for epoch in range(epochs):
        order = rng.permutation(dataset)
        for start in range(0, dataset, batch):
            for position, index in enumerate(order[start : start + batch]):
                loss = 2.3 * math.exp(-0.8 * epoch) + 0.05 * rng.random()
                if index == flip and epoch >= 6:
                    loss = 3.0 * math.exp(-0.8 * (epoch - 6)) + 0.05
                if index == 13:
                    loss = 2.0 + 0.1 * rng.random()
                rows += [(step, 0, position, layer, loss, int(index)) for layer in ("fc1", "fc2")]
            step += 1
    return pd.DataFrame(rows, columns=["step", "micro", "sample", "layer", "loss", "index"])


def _streamed(samples: pd.DataFrame, cuts: list[int]) -> pd.DataFrame:
    reducer = SampleReducer()
    for start, stop in zip([0, *cuts], [*cuts, len(samples)], strict=True):
        reducer.add(samples.iloc[start:stop])
    return reducer.finish().dynamics


def _value(rows: pd.DataFrame, name: str, scope: str = "model", key: str = "") -> np.ndarray:
    chosen = rows[(rows["name"] == name) & (rows["scope"] == scope) & (rows["key"] == key)]
    return chosen.sort_values("step")["value"].to_numpy(float)


def test_a_label_flip_mid_run_shows_a_forgetting_event() -> None:
    rows = _streamed(_epochs(), [500, 1001, 1200])  # cuts inside steps: the reducer waits
    assert _value(rows, "forgetting_events", "index", "7") == pytest.approx([1.0])
    assert _value(rows, "forgetting_events", "index", "13") == pytest.approx([0.0])
    flagged = rows[(rows["name"] == "flagged") & (rows["scope"] == "index")].sort_values("value")
    assert flagged["key"].tolist() == ["13", "7"]  # never learned first, then the forgotten one
    assert np.isnan(_value(rows, "first_learned", "index", "13")[0])
    # learned (loss < ln 2) from epoch 2 on: 2.3 e^-1.6 = 0.46; 4 steps per epoch
    assert 8 <= _value(rows, "first_learned", "index", "7")[0] < 12
    totals = {n: _value(rows, n)[0] for n in ("samples_seen", "never_learned", "forgotten_samples")}
    assert totals == {"samples_seen": 64, "never_learned": 1, "forgotten_samples": 1}
    events = rows[(rows["name"] == "forgetting_events") & (rows["scope"] == "model") & (rows["step"] >= 0)]
    assert events["value"].sum() == 1 and events.loc[events["value"] > 0, "step"].iloc[0] // 4 == 6


def test_loss_percentiles_and_learned_fraction_per_step() -> None:
    samples = _epochs()
    rows = _streamed(samples, [])
    per_sample = samples.drop_duplicates(["step", "micro", "sample"])
    expected = per_sample.groupby("step")["loss"].quantile(0.9).to_numpy()
    assert _value(rows, "loss_p90") == pytest.approx(expected)
    learned = (per_sample["loss"] < math.log(2)).groupby(per_sample["step"]).mean().to_numpy()
    assert _value(rows, "learned_fraction") == pytest.approx(learned)


def test_state_is_per_index_and_batches_merge_like_one() -> None:
    whole, split = LearningDynamics(), LearningDynamics()
    step, index = np.array([0, 0, 1, 1, 2, 2]), np.array([5, 9, 9, 5, 5, 9])
    loss = np.array([0.1, 2, 0.1, 2, 0.1, 2])
    whole.add(step, index, loss)
    for chosen in (step == 0, step == 1, step == 2):
        split.add(step[chosen], index[chosen], loss[chosen])
    pd.testing.assert_frame_equal(whole.rows(), split.rows())
    assert len(split._ids) == 2  # noqa: SLF001  (bounded: one state entry per dataset index)
    rows = split.rows()
    assert _value(rows, "forgetting_events", "index", "5") == pytest.approx([1.0])
    assert _value(rows, "forgetting_events", "index", "9") == pytest.approx([1.0])


def test_unknown_losses_and_indices_give_no_per_index_rows() -> None:
    samples = _epochs(epochs=2)
    assert _streamed(samples.assign(loss=np.nan), []).empty
    rows = _streamed(samples.assign(index=-1), [])
    assert not (rows["scope"] == "index").any() and len(_value(rows, "loss_p50")) == 8


def test_dynamics_reach_the_alignment_family() -> None:
    samples = _epochs(epochs=8)
    steps = pd.DataFrame({"step": sorted(samples["step"].unique()), "loss": 1.0})
    metrics = analyze_tables({"steps": steps, "samples": samples}).metrics
    flagged = metrics[metrics["name"] == "flagged"]
    assert set(flagged["family"]) == {"alignment"} and "7" in set(flagged["key"])
