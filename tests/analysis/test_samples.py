"""Tests for gradscope.analysis.samples: the streamed SAMPLES summary equals the whole-table
one, whatever the batch boundaries, and rows out of step order are refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kurtosis

from gradscope.analysis import samples as samples_module
from gradscope.analysis.central_moments import CentralMoments
from gradscope.analysis.engine import analyze_tables
from gradscope.analysis.samples import SampleReducer, summarize

LAYERS = ("body", "head")


def _tables(steps: int = 9, micros: int = 2, batch: int = 5, seed: int = 0):
    """SAMPLES (two layers, micro-batches, groups, sketches) and LAYERS with weight norms."""
    rng = np.random.default_rng(seed)
    sample_rows, layer_rows = [], []
    for step in range(steps):
        weights = {layer: rng.normal(size=4) for layer in LAYERS}
        layer_rows += [(step, layer, float(np.linalg.norm(w))) for layer, w in weights.items()]
        for micro in range(micros):
            for i in range(batch):
                for layer, w in weights.items():
                    g = rng.normal(size=4) + 0.3 * w
                    sample_rows.append((step, 0, micro, i, layer, float(g @ g), float(g @ w),
                                        (i + micro) % 3, g[:3].astype(np.float32)))
    columns = ["step", "rank", "micro", "sample", "layer", "norm2", "weight_dot", "group", "sketch"]
    return (pd.DataFrame(sample_rows, columns=columns),
            pd.DataFrame(layer_rows, columns=["step", "layer", "weight_norm"]))


def _head_scores(frame: pd.DataFrame, layers: pd.DataFrame) -> pd.DataFrame:
    """a_i of the head rows, computed here from the columns (reference)."""
    head = frame[frame["layer"] == "head"].merge(layers, on=["step", "layer"])
    return head.assign(gwa=-head["weight_dot"] / (np.sqrt(head["norm2"]) * head["weight_norm"]))


def _options(layers: pd.DataFrame) -> dict:
    return {"layers": layers, "head": "head", "epochs": {s: s // 3 for s in range(9)}}


def _streamed(frame: pd.DataFrame, layers: pd.DataFrame, sizes: list[int]):
    reducer = SampleReducer(**_options(layers))
    start = 0
    for size in sizes * len(frame):
        if start >= len(frame):
            break
        reducer.add(frame.iloc[start : start + size])
        start += size
    return reducer.finish()


@pytest.mark.parametrize("sizes", [[1], [7], [13, 2, 31], [10_000]])
def test_streamed_summary_equals_whole_table_summary(sizes: list[int]) -> None:
    frame, layers = _tables()
    whole = summarize(frame, **_options(layers))
    streamed = _streamed(frame, layers, sizes)
    assert streamed.problem is None
    for name in ("s2", "counts", "gwa", "misaligned"):
        pd.testing.assert_frame_equal(getattr(streamed, name), getattr(whole, name), check_exact=False)
    pd.testing.assert_frame_equal(streamed.sketch_moments[["step", "layer", "count"]],
                                  whole.sketch_moments[["step", "layer", "count"]], check_dtype=False)
    assert np.allclose(np.stack(streamed.sketch_moments["sumsq"]), np.stack(whole.sketch_moments["sumsq"]))
    assert streamed.groups.keys() == whole.groups.keys()
    assert all((streamed.groups[k] == whole.groups[k]).all() for k in whole.groups)
    for epoch, moments in whole.head_epochs.items():
        other = streamed.head_epochs[epoch]
        assert other.n == moments.n
        assert (other.mean, other.m2, other.m4) == pytest.approx((moments.mean, moments.m2, moments.m4))


def test_summary_values_against_the_rows() -> None:
    frame, layers = _tables()
    summary = summarize(frame, **_options(layers))
    s2 = frame.groupby(["step", "layer"])["norm2"].sum()
    assert summary.s2.set_index(["step", "layer"])["s2"].to_numpy() == pytest.approx(s2.to_numpy())
    assert (summary.counts["m"] == 10).all()  # 2 micro-batches of 5
    head = _head_scores(frame, layers)
    assert summary.misaligned["gwa"].tolist() == pytest.approx(sorted(head["gwa"])[:20])
    for epoch, moments in summary.head_epochs.items():
        chosen = head[head["step"] // 3 == epoch]["gwa"].to_numpy()
        assert moments.n == len(chosen) and moments.excess_kurtosis == pytest.approx(kurtosis(chosen))
    assert summary.groups[(4, 1)].tolist() == [(i + 1) % 3 for i in range(5)]


def test_head_sample_is_a_bounded_subset_per_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(samples_module, "PLOT_SAMPLES_PER_EPOCH", 4)
    frame, layers = _tables()
    summary = _streamed(frame, layers, [7])
    head = set(_head_scores(frame, layers)["gwa"].round(12))
    assert (summary.head_sample.groupby("epoch").size() == 4).all()
    assert set(summary.head_sample["gwa"].round(12)) <= head


def test_rows_out_of_step_order_are_refused_not_reduced() -> None:
    frame, layers = _tables()
    reducer = SampleReducer(**_options(layers))
    reducer.add(frame[frame["step"] >= 5])
    reducer.add(frame[frame["step"] < 5])
    summary = reducer.finish()
    assert summary.problem and "step order" in summary.problem
    steps = pd.DataFrame({"step": sorted(layers["step"].unique()), "rank": 0})
    analysis = analyze_tables({"steps": steps, "layers": layers.assign(param="w")}, samples=summary,
                              raise_errors=False)
    verdicts = {v.family: v for v in analysis.verdicts}
    assert verdicts["alignment"].level == "failed"
    assert "analysis failed: ValueError: samples rows are not in step order" in verdicts["alignment"].summary
    assert not len(analysis.metrics[analysis.metrics["family"] == "alignment"])


@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_central_moments_merge_exactly(offset: float) -> None:
    rng = np.random.default_rng(4)
    values = offset + rng.standard_t(5, size=1000)
    cuts = np.sort(rng.choice(np.arange(1, 1000), size=12, replace=False))
    merged = CentralMoments()
    for part in np.split(values, cuts):
        merged = merged.merge(CentralMoments.of(part))
    direct = CentralMoments.of(values)
    assert merged.n == direct.n
    assert (merged.mean, merged.m2, merged.m3, merged.m4) == pytest.approx(
        (direct.mean, direct.m2, direct.m3, direct.m4), rel=1e-8)
    assert merged.excess_kurtosis == pytest.approx(kurtosis(values), rel=1e-8)
