"""kill -9 of the training process and of gradscope at random points (5 each here;
scripts/fault_kills.py runs 50 and prints the table)."""

from __future__ import annotations

import random

import pytest

from tests.fault import harness

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("seed", range(5))
def test_kill_9_of_the_training_process(tmp_path, seed):
    run = tmp_path / "run"
    recording = harness.start(run, "--steps", "100000", "--sleep", "0.01")
    recording.wait_for_step(random.Random(seed).randint(1, 60))
    harness.kill(recording.child_pid)
    code, err = recording.finish()
    meta = harness.meta(run)
    assert code == 137
    assert meta["status"] == "crashed" and meta["signal"] == "SIGKILL" and "OOM" in meta["end_reason"]
    assert all(name.startswith(("steps/", "layers/", "samples/")) for name in harness.leftovers(run))
    report = harness.gradscope("report", str(run), "--no-color")
    assert report.returncode == 0 and "Traceback" not in report.stderr, report.stderr


@pytest.mark.parametrize("seed", range(5))
def test_kill_9_of_gradscope_stops_and_finalises_the_training_process(tmp_path, seed):
    run = tmp_path / "run"
    recording = harness.start(run, "--steps", "100000", "--sleep", "0.01")
    recording.wait_for_step(random.Random(100 + seed).randint(1, 60))
    harness.kill(recording.proc.pid)
    recording.finish()
    assert harness.wait_gone(recording.child_pid), "training left running without gradscope"
    meta = harness.meta(run)
    assert meta["status"] == "interrupted" and "died" in meta["end_reason"]
    assert harness.rows(run, "steps") == meta["steps"] >= recording.last_step() + 1
    assert harness.leftovers(run) == []
    report = harness.gradscope("report", str(run), "--no-color")
    assert report.returncode == 0 and "Traceback" not in report.stderr, report.stderr


def test_kill_9_of_the_training_process_keeps_the_layer_table(tmp_path):
    """meta.json holds the layer table and head from the first step on (issue 12): the first
    step's write was skipped because the step was counted only after it."""
    run = tmp_path / "run"
    recording = harness.start(run, "--steps", "100000", "--sleep", "0.01")
    recording.wait_for_step(20)
    harness.kill(recording.child_pid)
    recording.finish()
    meta = harness.meta(run)
    assert meta["layers"] and meta["head"] and meta["steps"] >= 1, meta
    report = harness.gradscope("report", str(run), "--no-color")
    assert "no layer table" not in report.stdout, report.stdout
