"""`gradscope record` on unmodified scripts: output unchanged, scalars match the script's own."""

from __future__ import annotations

import math

import pytest

from gradscope.store.reader import open_run
from tests.e2e.harness import python, run_plain, run_recorded

RTOL = 1e-6


def _close(actual: float, expected: float) -> bool:
    return math.isclose(actual, expected, rel_tol=RTOL, abs_tol=1e-9)


def _record_and_compare(script: str, tmp_path, *args: str, options=("--profile", "minimal")):
    plain = run_plain(python(script, *args), tmp_path)
    recorded = run_recorded(python(script, *args), tmp_path / "run", tmp_path, options=options)
    assert recorded.stdout == plain.stdout, "recording changed the script's output"
    assert recorded.returncode == plain.returncode
    assert recorded.reference == plain.reference
    return plain, recorded, open_run(tmp_path / "run")


def _check_layers(run, reference, steps_with_updates):
    layers = run.table("layers").set_index(["step", "param"])
    for step, expected in zip(steps_with_updates, reference, strict=True):
        for name, values in expected["params"].items():
            row = layers.loc[(step, name)]
            for column in ("grad_norm", "weight_norm", "update_norm", "init_distance"):
                assert _close(row[column], values[column]), (step, name, column, row[column], values)


@pytest.mark.parametrize("script", ["train_mlp_adam.py", "train_accumulate.py", "train_manual_sgd.py"])
def test_scalars_match_the_scripts_own_values(script, tmp_path):
    plain, _, run = _record_and_compare(script, tmp_path)
    reference = plain.reference["steps"]
    steps = run.table("steps").sort_values("step")
    assert list(steps["step"]) == list(range(len(reference)))
    for (_, row), expected in zip(steps.iterrows(), reference, strict=True):
        assert _close(row["loss"], expected["loss"])
    _check_layers(run, reference, range(len(reference)))
    assert run.meta["status"] == "finished"
    assert run.meta["layers"], "layer table missing from meta.json"


def test_accumulation_counts_micro_batches(tmp_path):
    _, _, run = _record_and_compare("train_accumulate.py", tmp_path)
    assert set(run.table("steps")["backward_calls"]) == {4}


def test_lbfgs_closure_is_one_step_per_optimizer_step(tmp_path):
    plain, _, run = _record_and_compare("train_lbfgs.py", tmp_path)
    steps = run.table("steps").sort_values("step")
    assert len(steps) == 3
    assert (steps["backward_calls"] > 1).all()
    for (_, row), expected in zip(steps.iterrows(), plain.reference["steps"], strict=True):
        assert _close(row["loss"], expected["loss"])
    _check_layers(run, plain.reference["steps"], range(3))


def test_grad_scaler_unscaled_norms_and_skipped_step(tmp_path):
    plain, _, run = _record_and_compare("train_amp_scaler.py", tmp_path)
    steps = run.table("steps").sort_values("step")
    assert list(steps["skipped"]) == [False, False, True, False, False]
    reference = plain.reference["steps"]
    kept = [i for i, s in enumerate(reference) if not s["skipped"]]
    _check_layers(run, [reference[i] for i in kept], kept)
    assert steps["loss_scale"].iloc[0] == 256.0


def test_exit_code_and_streams_pass_through(tmp_path):
    plain, recorded, run = _record_and_compare("train_mlp_adam.py", tmp_path, "--exit-code", "3")
    assert recorded.returncode == 3
    assert "to stderr" in recorded.stderr
    assert run.meta["status"] == "crashed" and run.meta["exit_code"] == 3


def test_every_n_records_scalars_every_step_and_layers_every_n(tmp_path):
    _, _, run = _record_and_compare(
        "train_mlp_adam.py", tmp_path, options=("--profile", "minimal", "--every", "3")
    )
    steps = run.table("steps")
    assert len(steps) == 6 and steps["loss"].notna().all()
    assert sorted(run.table("layers")["step"].unique()) == [0, 3]
