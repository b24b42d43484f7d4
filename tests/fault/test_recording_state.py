"""Issue 11: a run that recorded nothing says so (python -I/-E, no backward), and the Python
API refuses to overwrite an earlier run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradscope
from gradscope.errors import GradscopeError
from tests.fault import harness


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["-I", "-E"])
def test_python_flags_that_ignore_pythonpath_are_named(tmp_path, flag):
    done = harness.record(tmp_path / "run", "--steps", "3", python_flags=(flag,))
    meta = harness.meta(tmp_path / "run")
    assert done.returncode == 0
    assert f"python {flag} ignores PYTHONPATH" in done.stderr.splitlines()[0]  # said up front
    assert "nothing was recorded" in done.stderr
    assert meta["recording"]["state"] == "never-started" and flag in meta["recording"]["reason"]


@pytest.mark.slow
def test_script_without_backward_is_named(tmp_path):
    done = harness.record(tmp_path / "run", "--steps", "3", "--no-backward")
    meta = harness.meta(tmp_path / "run")
    assert done.returncode == 0 and "nothing was recorded" in done.stderr
    assert meta["recording"]["state"] == "no-backward"


def _train(recorder_dir, **options):
    model = nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradscope.Recorder(model, optimizer, run_dir=recorder_dir, profile="minimal", **options):
        for _ in range(2):
            optimizer.zero_grad()
            model(torch.randn(3, 4)).sum().backward()
            optimizer.step()


def test_api_refuses_a_used_run_directory_before_training(tmp_path):
    _train(tmp_path / "run")
    with pytest.raises(GradscopeError, match="not empty: pass force=True"):
        _train(tmp_path / "run")
    _train(tmp_path / "run", force=True)
    (tmp_path / "empty").mkdir()
    _train(tmp_path / "empty")  # an existing empty folder is fine
    assert harness.meta(tmp_path / "empty")["status"] == "finished"


def test_a_script_stopped_before_the_recorder_started_is_not_called_never_started(tmp_path):
    """SIGTERM/SIGINT while the script still imports torch: no recorder-started event, but
    nothing says PYTHONPATH was reset, so the state is unknown, not never-started (issue 12)."""
    import signal

    from gradscope.record.launch import recording_state
    from gradscope.record.supervise import Outcome

    for outcome in (Outcome(-15, signal.SIGTERM), Outcome(130, signal.SIGINT), Outcome(-9, None)):
        state = recording_state(tmp_path, outcome, None, {})
        assert state["state"] == "unknown" and "before the recorder started" in state["reason"], state
    assert recording_state(tmp_path, Outcome(0, None), None, {})["state"] == "never-started"


@pytest.mark.slow
def test_force_clears_the_earlier_runs_tables_and_events(tmp_path):
    """record --force used to keep the earlier run's shards and events: they were analysed as
    the new run's, and a new run that recorded nothing (python -I) said 'steps were recorded'."""
    run = tmp_path / "run"
    assert harness.record(run, "--steps", "3").returncode == 0
    (run / "notes.txt").write_text("mine")
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "gradscope", "record", "--force", "--out", str(run), "--",
                           sys.executable, "-I", str(harness.TRAIN), "--steps", "3"],
                          env=harness.environment(), capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert harness.meta(run)["recording"]["state"] == "never-started"
    assert harness.rows(run, "steps") == 0 and (run / "notes.txt").read_text() == "mine"


def test_exit_code_128_plus_a_stop_signal_is_interrupted():
    """A script whose own SIGTERM handler exits 143 after a SIGTERM sent straight to it
    (not through gradscope) was 'crashed' (issue 12)."""
    from gradscope.record.launch import end_state
    from gradscope.record.supervise import Outcome

    assert end_state(Outcome(143, None))["status"] == "interrupted"
    assert end_state(Outcome(130, None))["status"] == "interrupted"
    assert end_state(Outcome(3, None))["status"] == "crashed"
