"""Combining ranks and the DDP local/global noise estimate, on tables with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from gradscope.analysis.ddp_noise import ddp_noise_rows, local_global
from gradscope.analysis.ranks import MICRO_STRIDE, combine, merged_batches, uneven_steps


def _steps(sizes: dict[int, list[int]], scale: dict[int, list[float]] | None = None) -> pd.DataFrame:
    rows = []
    for step, per_rank in sizes.items():
        for rank, size in enumerate(per_rank):
            f = scale[step][rank] if scale else float(size)
            rows.append({"step": step, "rank": rank, "loss": 1.0 + rank, "batch_size": size,
                         "per_sample_scale": f, "grad_norm": 1.0, "skipped": False, "recorded": True})
    return pd.DataFrame(rows)


def _layers(values: dict[tuple[int, int], tuple[float, float]]) -> pd.DataFrame:
    """(step, rank) -> (local_norm2, sum_norm2) of one layer "fc" with one parameter."""
    return pd.DataFrame([{"step": s, "rank": r, "layer": "fc", "param": "fc.weight",
                          "local_norm2": local, "sum_norm2": total}
                         for (s, r), (local, total) in values.items()])


def test_mccandlish_two_batch_sizes():
    """B_small = 4, B_big = 8: |G|^2 = (8|G_big|^2 - 4|G_small|^2)/4, S = (|G_s|^2 - |G_b|^2)/(1/4 - 1/8)."""
    small, big = 3.0, 2.0
    g2, trace = local_global(np.array([small]), np.array([big]), np.array([4]), np.array([2]))
    assert g2[0] == (8 * big - 4 * small) / (8 - 4) and trace[0] == (small - big) / (1 / 4 - 1 / 8)


def test_local_global_estimate_recovers_a_known_noise_scale():
    """Gaussian per-sample gradients with |G|^2 = 1 and tr Sigma = 64: B_simple = 64."""
    rng = np.random.default_rng(0)
    dim, batch, world, steps = 64, 8, 4, 4000
    mean = np.zeros(dim)
    mean[0] = 1.0
    samples = mean + rng.standard_normal((steps, world, batch, dim))  # Sigma = I: tr = 64
    local = samples.mean(axis=2)  # (steps, world, dim): each rank's mean gradient
    rows = {}
    for step in range(steps):
        total = float(np.sum(local[step].mean(axis=0) ** 2))
        for rank in range(world):
            rows[(step, rank)] = (float(np.sum(local[step, rank] ** 2)), total)
    metrics = ddp_noise_rows(_layers(rows), _steps({s: [batch] * world for s in range(steps)}), decay=0.999)
    model = metrics[(metrics["name"] == "b_simple_ddp") & (metrics["scope"] == "model")]
    assert abs(model["value"].iloc[-1] - 64.0) / 64.0 < 0.1


def test_uneven_ranks_are_named_and_their_s1_left_out():
    steps = _steps({0: [8, 8], 1: [8, 2]})
    assert uneven_steps(steps) == {1}
    layers = _layers({(0, 0): (1.0, 0.5), (0, 1): (2.0, 0.5), (1, 0): (1.0, 0.5), (1, 1): (2.0, 0.5)})
    combined = combine({"steps": steps, "layers": layers}, {"distributed": {"world_size": 2}})
    s1 = combined["layers"].set_index("step")["sum_norm2"]
    assert s1[0] == 0.5 * 4 and np.isnan(s1[1])  # W^2 |p.grad|^2; unknown on the uneven step
    noise = ddp_noise_rows(layers, steps)
    raw = noise[(noise["name"] == "b_simple_ddp_raw") & (noise["scope"] == "model")]
    raw = raw.set_index("step")["value"]
    assert np.isnan(raw[1])
    masked = noise[noise["name"] == "masked_uneven_ranks"]
    assert masked["step"].tolist() == [1] and masked["value"].tolist() == [1.0]


def test_sum_losses_with_uneven_batches_stay_exact():
    """f = 1 on every rank (a sum loss): DDP's average is proportional to the global sum."""
    assert uneven_steps(_steps({0: [8, 2]}, scale={0: [1.0, 1.0]})) == set()


def test_steps_counted_once_with_the_global_batch_and_weighted_loss():
    combined = combine({"steps": _steps({0: [6, 2]})}, {})["steps"]
    assert len(combined) == 1 and combined["batch_size"].iloc[0] == 8
    assert combined["loss"].iloc[0] == (6 * 1.0 + 2 * 2.0) / 8


def test_merged_batches_keep_step_order_and_distinct_micro():
    def stream(rank: int, steps: list[list[int]]):
        for block in steps:
            count = len(block)
            yield pa.RecordBatch.from_pydict({"step": block, "rank": [rank] * count, "micro": [0] * count})

    streams = [stream(0, [[0, 0, 1], [1, 2]]), stream(1, [[0], [1, 1, 2, 2]])]
    merged = pa.concat_tables(list(merged_batches(streams)))
    assert merged.column("step").to_pylist() == sorted(merged.column("step").to_pylist())
    assert set(merged.column("micro").to_pylist()) == {0, MICRO_STRIDE}
    assert merged.num_rows == 10


def test_a_comm_hook_or_a_missing_rank_hides_s1():
    steps = _steps({0: [8, 8], 1: [8, 8]})
    layers = _layers({(0, 0): (1.0, 0.5), (0, 1): (2.0, 0.5), (1, 0): (1.0, 0.5), (1, 1): (2.0, 0.5)})
    meta = {"distributed": {"world_size": 2, "comm_hook": True}}
    hooked = combine({"steps": steps, "layers": layers}, meta)
    assert hooked["layers"]["sum_norm2"].isna().all()
    joined = steps[~((steps["step"] == 1) & (steps["rank"] == 1))]  # rank 1 had no data left
    assert uneven_steps(joined) == {1}
