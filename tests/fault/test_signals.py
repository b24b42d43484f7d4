"""SIGTERM and SIGINT, to the gradscope process or its process group, as schedulers and
people send them: passed on to the script, everything buffered saved, status interrupted."""

from __future__ import annotations

import signal

import pytest

from tests.fault import harness

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("target", ["parent", "group"])
def test_signal_is_passed_on_and_buffered_steps_are_saved(tmp_path, signum, target):
    recording = harness.start(tmp_path / "run", "--steps", "100000", "--sleep", "0.01")
    recording.wait_for_step(40)
    if target == "parent":
        harness.kill(recording.proc.pid, signum)
    else:
        harness.signal_group(recording, signum)
    code, err = recording.finish()
    meta = harness.meta(tmp_path / "run")
    assert code == 128 + signum, err
    assert meta["status"] == "interrupted" and meta["signal"] == signal.Signals(signum).name
    saved = harness.rows(tmp_path / "run", "steps")
    assert saved == meta["steps"] >= recording.last_step() + 1  # nothing buffered was lost
    assert meta["recording"]["state"] == "ok"
    assert meta["unwritten"] == {}
    assert harness.leftovers(tmp_path / "run") == []


def test_script_with_its_own_sigterm_handler_is_interrupted_not_crashed(tmp_path):
    recording = harness.start(tmp_path / "run", "--steps", "100000", "--sleep", "0.01", "--handle-sigterm")
    recording.wait_for_step(20)
    harness.kill(recording.proc.pid, signal.SIGTERM)
    code, err = recording.finish()
    meta = harness.meta(tmp_path / "run")
    assert code == 143 and "checkpoint saved, exiting" in recording.lines  # its own handler ran
    assert meta["status"] == "interrupted" and meta["signal"] == "SIGTERM"
    assert harness.rows(tmp_path / "run", "steps") == meta["steps"] >= recording.last_step() + 1
