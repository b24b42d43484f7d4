"""Per-sample values are each sample's exact contribution c_i to the gradient the optimizer
sees, whatever the loss: checked against a one-sample-at-a-time autograd loop on scripts
that write their loss the ways people write it (tests/scripts/train_losses.py)."""

from __future__ import annotations

import contextlib
import importlib
import math
import sys

import numpy as np
import pytest
import torch

from gradscope.store.reader import open_run
from tests.e2e.harness import SCRIPTS, python, run_plain, run_recorded
from tests.record.reference import reference_contributions

RTOL = 1e-4  # float32 model
AUTOCAST_RTOL = 5e-2  # bfloat16 matmuls, batched vs one sample at a time

# case -> (f, its source): g_i = f c_i for the per-sample-loss convention
FACTORS = {
    "plain": (8, "read"),
    "sum": (1, "read"),
    "ignore_index": (8, "assumed"),  # ignored targets: the mean divides by the kept count
    "label_smoothing": (8, "assumed"),
    "reg_ce": (8, "assumed"),
    "ce_reg": (8, "assumed"),
    "accumulate": (8, "read"),  # 2 samples x loss / 4
    "scaler": (8, "read"),
    "autocast": (8, "read"),
}


def _script():
    sys.path.insert(0, str(SCRIPTS))
    try:
        return importlib.import_module("train_losses")
    finally:
        sys.path.remove(str(SCRIPTS))


def _reference(case: str) -> dict[tuple[int, str], dict[str, np.ndarray]]:
    """Per (micro-batch, layer) of step 0: norm2 and weight_dot of each c_i."""
    module = _script()
    model, batches = module.build()
    micro_batches, divisor = module.parts(case, *batches[0])
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if case == "autocast" else contextlib.nullcontext()
    expected = {}
    for micro, (x, y) in enumerate(micro_batches):
        with autocast:
            stats = reference_contributions(
                model, x, lambda out, y=y: module.loss_of(case, out.float(), y) / divisor
            )
        for layer, values in stats.items():
            expected[(micro, layer)] = {k: v.numpy() for k, v in values.items()}
    return expected


def _deviation(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want)) / (np.max(np.abs(want)) + 1e-30))


@pytest.mark.slow
@pytest.mark.parametrize("case", list(FACTORS))
def test_samples_are_exact_contributions(case, tmp_path):
    command = python("train_losses.py", case)
    plain = run_plain(command, tmp_path)
    recorded = run_recorded(command, tmp_path / "run", tmp_path)
    assert recorded.returncode == plain.returncode == 0, recorded.stderr
    assert recorded.stdout == plain.stdout
    assert recorded.reference == plain.reference
    run = open_run(tmp_path / "run")
    assert not run.meta["failures"], run.meta["failures"]
    steps = run.table("steps").sort_values("step")
    reference = plain.reference["steps"]
    assert len(steps) == len(reference)
    for (_, row), want in zip(steps.iterrows(), reference, strict=True):
        assert math.isclose(row["loss"], want["loss"], rel_tol=1e-6), (row["loss"], want["loss"])
    f, source = FACTORS[case]
    assert (steps["per_sample_scale"].iloc[0], steps["per_sample_scale_source"].iloc[0]) == (f, source)

    samples = run.table("samples")
    step0 = samples[samples["step"] == 0]
    rtol = AUTOCAST_RTOL if case == "autocast" else RTOL
    deviations = []
    for (micro, layer), want in _reference(case).items():
        rows = step0[(step0["micro"] == micro) & (step0["layer"] == layer)].sort_values("sample")
        for column in ("norm2", "weight_dot"):
            deviation = _deviation(rows[column].to_numpy(), want[column])
            deviations.append(deviation)
            assert deviation < rtol, (case, micro, layer, column, deviation)
    print(f"{case}: max deviation from the one-sample loop {max(deviations):.2e}")

    # sum_i c_i = p.grad: S1 is the unscaled gradient's squared norm, as the optimizer sees it
    layers = run.table("layers")
    first = layers[layers["step"] == 0].set_index("param")
    for name, values in reference[0]["params"].items():
        assert math.isclose(first.loc[name, "sum_norm2"], values["grad_norm"] ** 2, rel_tol=1e-5), name
        assert math.isclose(first.loc[name, "grad_norm"], values["grad_norm"], rel_tol=1e-6), name


@pytest.mark.slow
def test_grad_scaler_loss_curve_is_the_unscaled_loss(tmp_path):
    """The scale doubles every step; the recorded loss must not follow it."""
    command = python("train_losses.py", "scaler")
    plain = run_plain(command, tmp_path)
    run_recorded(command, tmp_path / "run", tmp_path, options=("--profile", "minimal"))
    steps = open_run(tmp_path / "run").table("steps").sort_values("step")
    assert list(steps["loss_scale"]) == [1024.0, 2048.0, 4096.0]
    want = [s["loss"] for s in plain.reference["steps"]]
    np.testing.assert_allclose(steps["loss"].to_numpy(), want, rtol=1e-6)


@pytest.mark.slow
def test_a_v1_run_still_reads(tmp_path):
    """v1 steps shards lack per_sample_scale_source: read as null, and the report runs."""
    import json

    import pyarrow.parquet as pq

    from tests.e2e.harness import gradscope

    run_recorded(python("train_losses.py", "plain"), tmp_path / "run", tmp_path)
    run_dir = tmp_path / "run"
    for shard in (run_dir / "steps").glob("rank-*/part-*.parquet"):
        pq.write_table(pq.read_table(shard).drop(["per_sample_scale_source"]), shard)
    meta = json.loads((run_dir / "meta.json").read_text())
    (run_dir / "meta.json").write_text(json.dumps({**meta, "format_version": 1}))
    run = open_run(run_dir)
    steps = run.table("steps")
    assert len(steps) == 3 and steps["per_sample_scale_source"].isna().all() and not run.problems
    batches = list(run.record_batches("steps"))
    assert sum(len(b) for b in batches) == 3
    proc = gradscope("report", "--no-color", str(run_dir))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_ratio_metrics_do_not_depend_on_the_per_sample_factor(tmp_path):
    """Rewrite a v2 run in v1 units (samples times f, Grams and S1 times f^2): every metric
    gradscope computes must stay the same, so v1 and v2 runs read alike."""
    import shutil

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from gradscope.analysis import analyze

    command = python("train_losses.py", "accumulate")
    run_recorded(command, tmp_path / "v2", tmp_path, options=("--profile", "full"))
    shutil.copytree(tmp_path / "v2", tmp_path / "v1")
    f = float(open_run(tmp_path / "v2").table("steps")["per_sample_scale"].iloc[0])
    scaled = {"samples": {"norm2": f * f, "weight_dot": f, "sketch": f}, "gram": {"values": f * f},
              "layers": {"sum_norm2": f * f}}
    for table, columns in scaled.items():
        for shard in (tmp_path / "v1" / table).glob("rank-*/part-*.parquet"):
            data = pq.read_table(shard)
            for name, factor in columns.items():
                column = data[name]
                if pa.types.is_list(column.type):
                    flat = pc.multiply(pc.list_flatten(column), factor).cast(column.type.value_type)
                    offsets = column.combine_chunks().offsets
                    values = pa.ListArray.from_arrays(offsets, flat.combine_chunks())
                else:
                    values = pc.multiply(column, factor)
                data = data.set_column(data.schema.get_field_index(name), data.schema.field(name), values)
            pq.write_table(data, shard)
    v1, v2 = analyze(tmp_path / "v1").metrics, analyze(tmp_path / "v2").metrics
    keys = ["step", "name", "scope", "key"]
    merged = v1.merge(v2, on=keys, suffixes=("_v1", "_v2"))
    assert len(merged) == len(v1) == len(v2) and len(merged) > 50
    np.testing.assert_allclose(merged["value_v1"], merged["value_v2"], rtol=1e-5, atol=1e-9, equal_nan=True)
