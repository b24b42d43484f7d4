"""`gradscope record` on training loops written the ways people write them: the script's
output and exit code are unchanged, and steps, losses and per-parameter values match what
the script measured about itself (tests/scripts/reflog.py)."""

from __future__ import annotations

import importlib
import math
import sys

import numpy as np
import pytest
import torch.nn.functional as F

from gradscope.store.reader import open_run
from tests.e2e.harness import SCRIPTS, python, run_plain, run_recorded
from tests.record.reference import reference_contributions

RTOL = 1e-6
SAMPLE_RTOL = 1e-4  # float32 models


def _build(script: str):
    sys.path.insert(0, str(SCRIPTS))
    try:
        return importlib.import_module(script).build()
    finally:
        sys.path.remove(str(SCRIPTS))


def _check_samples(run, micro_batches, step=0) -> float:
    """Step ``step``'s per-sample values against the one-sample-at-a-time loop, for
    [(micro, model, inputs, loss of the batch output)]; returns the largest deviation."""
    samples = run.table("samples")
    samples = samples[samples["step"] == step]
    worst = 0.0
    for micro, model, inputs, loss in micro_batches:
        for layer, want in reference_contributions(model, inputs, loss).items():
            rows = samples[(samples["micro"] == micro) & (samples["layer"] == layer)].sort_values("sample")
            for column in ("norm2", "weight_dot"):
                expected = want[column].numpy()
                error = np.max(np.abs(rows[column].to_numpy() - expected))
                deviation = error / (np.max(np.abs(expected)) + 1e-30)
                assert deviation < SAMPLE_RTOL, (micro, layer, column, deviation)
                worst = max(worst, float(deviation))
    return worst


def _record(script: str, tmp_path, options=()):
    plain = run_plain(python(script), tmp_path)
    recorded = run_recorded(python(script), tmp_path / "run", tmp_path, options=options)
    assert recorded.stdout == plain.stdout, "recording changed the script's output"
    assert recorded.returncode == plain.returncode == 0, recorded.stderr
    assert recorded.reference == plain.reference
    return plain.reference["steps"], recorded, open_run(tmp_path / "run")


def _check_steps(run, reference, columns=("grad_norm", "weight_norm", "update_norm", "init_distance")):
    steps = run.table("steps").sort_values("step")
    assert list(steps["step"]) == list(range(len(reference))), "one step per update"
    np.testing.assert_allclose(steps["loss"].to_numpy(), [s["loss"] for s in reference], rtol=RTOL)
    layers = run.table("layers").set_index(["step", "param"])
    for step, expected in enumerate(reference):
        for name, values in expected["params"].items():
            for column in columns:
                got = layers.loc[(step, name), column]
                assert math.isclose(got, values[column], rel_tol=RTOL, abs_tol=1e-9), (step, name, column)
    return steps


def _warning_lines(stderr: str) -> list[str]:
    """gradscope's lines on stderr but its closing summary ('gradscope: run DIR: N steps, ...')."""
    return [line for line in stderr.splitlines()
            if line.startswith("gradscope:") and not line.startswith("gradscope: run ")]


@pytest.mark.slow
def test_no_optimizer_updates_through_data_are_steps(tmp_path):
    """PyTorch examples: zero_grad, backward, p.data.add_(p.grad, alpha=-lr)."""
    reference, recorded, run = _record("train_data_sgd.py", tmp_path)
    steps = _check_steps(run, reference)
    assert (steps["optimizer"] == -1).all() and (steps["backward_calls"] == 1).all()
    assert steps["recorded"].all() and not _warning_lines(recorded.stderr)
    samples = run.table("samples")
    assert sorted(samples["step"].unique()) == [0, 1, 2, 3]
    model, x, y = _build("train_data_sgd")
    deviation = _check_samples(run, [(0, model, x, lambda out: F.cross_entropy(out, y))])
    print(f"no optimizer (.data): deviation {deviation:.1e}")


@pytest.mark.slow
def test_no_optimizer_every_n_records_the_right_steps(tmp_path):
    reference, _, run = _record("train_data_sgd.py", tmp_path, options=("--every", "2"))
    steps = _check_steps(run, reference, columns=())
    assert list(steps["recorded"]) == [True, False, True, False]
    assert sorted(run.table("samples")["step"].unique()) == [0, 2]
    layers = run.table("layers").set_index(["step", "param"])
    assert sorted(layers.index.get_level_values(0).unique()) == [0, 2]
    for step in (0, 2):
        for name, values in reference[step]["params"].items():
            for column in ("grad_norm", "weight_norm", "update_norm", "init_distance"):
                assert math.isclose(layers.loc[(step, name), column], values[column], rel_tol=RTOL), column


@pytest.mark.slow
def test_lightning_style_closure_accumulation(tmp_path):
    """One backward before optimizer.step(closure), one inside: both are the step's."""
    reference, recorded, run = _record("train_closure_accumulate.py", tmp_path)
    steps = _check_steps(run, reference)
    assert (steps["backward_calls"] == 2).all() and steps["grad_norm"].notna().all()
    assert not run.meta["failures"] and not _warning_lines(recorded.stderr)
    samples = run.table("samples")
    assert sorted(samples["micro"].unique()) == [0, 1]
    assert (run.table("steps")["batch_size"] == 12).all()
    layers = run.table("layers")
    np.testing.assert_allclose(layers["sum_norm2"], layers["grad_norm"] ** 2, rtol=1e-6)
    assert np.isfinite(samples["norm2"]).all()
    model, batches = _build("train_closure_accumulate")
    module = sys.modules["train_closure_accumulate"]
    micro = [(i, model, x, lambda out, y=y: module.loss_of(out, y)) for i, (x, y) in enumerate(batches[:2])]
    print(f"closure accumulation: deviation {_check_samples(run, micro):.1e}")


@pytest.mark.slow
def test_a_backward_that_raises_is_dropped_not_doubled(tmp_path):
    reference, recorded, run = _record("train_raising_hook.py", tmp_path)
    assert len(reference) == 3  # steps 1, 2, 3 updated; step 0's backward raised
    steps = _check_steps(run, reference)
    assert (steps["backward_calls"] == 1).all() and (steps["batch_size"] == 10).all()
    assert set(run.table("samples")["micro"]) == {0}
    # the first recorded step follows the failed backward: its values are not doubled
    model, x, y = _build("train_raising_hook")
    deviation = _check_samples(run, [(0, model, x, lambda out: F.cross_entropy(out, y))])
    print(f"raised backward: deviation {deviation:.1e}")
    lines = _warning_lines(recorded.stderr)
    assert len(lines) == 1 and "backward call raised" in lines[0], recorded.stderr
    assert "second line of the message" not in recorded.stderr  # every warning is one line
    assert [f["component"] for f in run.meta["failures"]] == ["backward"]


@pytest.mark.slow
def test_reentrant_checkpoint_backward_is_one_backward(tmp_path):
    reference, _, run = _record("train_checkpoint_count.py", tmp_path, options=("--profile", "minimal"))
    steps = _check_steps(run, reference)
    assert (steps["backward_calls"] == 1).all()


@pytest.mark.slow
def test_sparse_embedding_gradients(tmp_path):
    reference, recorded, run = _record("train_sparse_embedding.py", tmp_path)
    steps = _check_steps(run, reference)
    assert steps["recorded"].all() and steps["grad_norm"].notna().all()
    assert not _warning_lines(recorded.stderr), recorded.stderr
    model, ids, y = _build("train_sparse_embedding")
    deviation = _check_samples(run, [(0, model, ids, lambda out: F.cross_entropy(out, y))])
    print(f"sparse embedding: deviation {deviation:.1e}")
