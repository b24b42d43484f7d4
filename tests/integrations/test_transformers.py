"""Hugging Face Trainer's callback: a 2-layer GPT-2 from a config with gradient_accumulation_steps=2,
against the Trainer's own logs, and against the same script recorded by ``gradscope record``."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import numpy as np
import pytest

from gradscope.analysis import analyze
from gradscope.store.reader import open_run
from tests.e2e.harness import gradscope
from tests.integrations.conftest import SCRIPTS, import_or_skip, same_table

EXAMPLE = SCRIPTS / "hf_example.py"
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def transformers():
    os.environ.update(OFFLINE)  # no network: the model is built from a config
    return import_or_skip("transformers", "Trainer")


def _example():
    sys.path.insert(0, str(SCRIPTS))
    try:
        return importlib.import_module("hf_example")
    finally:
        sys.path.remove(str(SCRIPTS))


@pytest.mark.slow
def test_steps_and_losses_equal_the_trainers_logs(transformers, tmp_path) -> None:
    from gradscope.integrations.transformers import GradscopeCallback

    callback = GradscopeCallback(tmp_path / "run")
    trainer = _example().build(str(tmp_path / "out"), [callback], steps=6, accumulate=2)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    run = open_run(callback.run_dir)
    steps = run.table("steps").sort_values("step")
    assert trainer.state.global_step == 6 and len(logs) == 6 and list(steps["step"]) == list(range(6))
    # logging_steps=1: the Trainer logs each step's loss, summed over its 2 micro-batch backwards
    np.testing.assert_allclose(steps["loss"], [entry["loss"] for entry in logs], rtol=1e-6)
    # it logs the norm before clipping (max_grad_norm=1); the recorder the one the optimizer sees
    clipped = np.minimum([entry["grad_norm"] for entry in logs], trainer.args.max_grad_norm)
    np.testing.assert_allclose(steps["grad_norm"], clipped, rtol=1e-5)
    assert (steps["backward_calls"] == 2).all() and (steps["batch_size"] == 8).all()
    samples = run.table("samples")
    assert set(samples.groupby(["step", "micro"])["sample"].nunique()) == {4}
    assert run.meta["status"] == "finished" and run.meta["trainer"]["gradient_accumulation_steps"] == 2
    assert run.meta["trainer"]["global_step_end"] == run.meta["trainer"]["steps_recorded"] == 6
    metrics = analyze(run.path).metrics
    lr = metrics[metrics["name"] == "lr"]
    assert set(lr["key"]) == {"0", "1"}  # the Trainer's AdamW: weights with decay, then without
    for _, group in lr.groupby("key"):
        expected = [entry["learning_rate"] for entry in logs]
        np.testing.assert_allclose(group.sort_values("step")["value"], expected)


@pytest.mark.slow
def test_callback_and_gradscope_record_give_the_same_tables(transformers, tmp_path) -> None:
    env = dict(os.environ, **OFFLINE)
    by_callback = subprocess.run([sys.executable, str(EXAMPLE), "--out", str(tmp_path / "callback")],
                                 capture_output=True, text=True, timeout=300, env=env)
    assert by_callback.returncode == 0, by_callback.stderr
    recorded = gradscope("record", "--out", str(tmp_path / "record"), "--",
                         sys.executable, str(EXAMPLE), "--no-gradscope", env=OFFLINE)
    assert recorded.returncode == 0, recorded.stderr
    last = by_callback.stdout.strip().splitlines()[-1]
    assert last.startswith("6 optimizer steps") and recorded.stdout.strip().splitlines()[-1] == last
    a, b = open_run(tmp_path / "callback"), open_run(tmp_path / "record")
    same_table(a.table("steps"), b.table("steps"), ["step", "rank"])
    same_table(a.table("layers"), b.table("layers"), ["step", "rank", "param"])
    same_table(a.table("samples"), b.table("samples"), ["step", "rank", "micro", "sample", "layer"])
    assert [layer["name"] for layer in a.meta["layers"]] == [layer["name"] for layer in b.meta["layers"]]


def test_missing_transformers_is_one_line() -> None:
    code = ("import sys\n"
            "sys.modules['transformers'] = None\n"
            "try:\n    import gradscope.integrations.transformers\n"
            "except ImportError as err:\n    print(err)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == ("gradscope's Hugging Face callback needs the transformers package: "
                          "pip install 'gradscope[transformers]'\n")
