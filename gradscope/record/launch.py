"""The parent side of ``gradscope record``: prepare the run directory, run the command.

The command runs as a child process with the bootstrap folder first on PYTHONPATH (its
``sitecustomize`` starts the recorder inside every Python process that imports torch)
and the run directory and configuration in the environment. Standard streams are
inherited, signals are passed on (supervise.py), and the child's exit code is returned
unchanged. After it exits, meta.json says how it ended (``status``, ``signal``,
``end_reason``) and whether anything was recorded (``recording``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

from gradscope.errors import GradscopeError, os_error_line, short_path
from gradscope.record.config import RecordConfig
from gradscope.record.rank_claim import CLAIMS
from gradscope.record.supervise import Outcome, run_supervised
from gradscope.store import meta as run_meta
from gradscope.store.meta import META_FILE, new_meta, now_iso, write_json_atomic
from gradscope.store.schema import TABLES

BOOTSTRAP_DIR = Path(__file__).parent / "inject" / "bootstrap"
ENV_RUN_DIR = "GRADSCOPE_RUN_DIR"
ENV_CONFIG = "GRADSCOPE_CONFIG"
ENV_LAUNCHER = "GRADSCOPE_LAUNCHER_PID"
STARTED_EVENT = "recorder-started"
FINISHED_EVENT = "recorder-finished"  # with "steps": how many steps that process saw
MAX_EVENTS_SCAN = 8 * 1024 * 1024
# Interpreter flags that keep PYTHONPATH (-I, -E) or site (-S, -I) from being read.
BLIND_FLAGS = {"I": "-I ignores PYTHONPATH", "E": "-E ignores PYTHONPATH", "S": "-S skips sitecustomize"}


def default_run_dir(command: list[str]) -> Path:
    """runs/<script stem>-<time>, e.g. runs/train-20261123-101500."""
    script = next((part for part in command[1:] if part.endswith(".py")), None)
    stem = Path(script).stem if script else Path(command[0]).name if command and command[0] else "run"
    return Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def validate_command(command: list[str]) -> None:
    """One-line GradscopeError when the command cannot be run at all."""
    if not command:
        raise GradscopeError("no command to record: put it after --, e.g. -- python train.py")
    program = command[0]
    if not program.strip() or "\0" in program:
        raise GradscopeError("the command after -- is empty")
    if os.sep in program:
        path = Path(program)
        if path.is_dir():
            raise GradscopeError(f"{program} is a directory, not a command")
        if not path.is_file():
            raise GradscopeError(f"command not found: {program}")
        if not os.access(path, os.X_OK):
            raise GradscopeError(f"{program} is not executable")
    elif shutil.which(program) is None:
        raise GradscopeError(f"command not found: {program}")


def blind_python_flags(command: list[str]) -> str | None:
    """Why a ``python -I/-E/-S ...`` command cannot load the recorder, else None."""
    if not command or not Path(command[0]).name.startswith("python"):
        return None
    for arg in command[1:]:
        if not arg.startswith("-") or arg in ("-", "-m", "-c") or arg.startswith("--"):
            break
        for flag in arg[1:]:
            if flag in BLIND_FLAGS:
                return f"python {BLIND_FLAGS[flag]}, so gradscope's recorder cannot be injected"
            if flag in "cmWXQ":  # takes a value or ends the options
                return None
    return None


def prepare_run_dir(run_dir: Path, command: list[str], config: RecordConfig, force: bool) -> None:
    try:
        if run_dir.exists() and not run_dir.is_dir():
            raise GradscopeError(f"--out {run_dir} is a file, not a directory")
        if run_dir.is_dir() and any(run_dir.iterdir()) and not force:
            raise GradscopeError(f"run directory {run_dir} is not empty (pass --force to reuse it)")
        if force and run_dir.is_dir():
            clear_earlier_run(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        meta = new_meta(command, json.loads(config.to_json()))
        meta["launcher"] = {"pid": os.getpid(), "host": socket.gethostname()}
        write_json_atomic(run_dir / META_FILE, meta)
    except OSError as err:
        where = short_path(run_dir)
        raise GradscopeError(f"cannot write run directory {where}: {os_error_line(err)}") from None
    run_meta.make_reserve(run_dir)


def clear_earlier_run(run_dir: Path) -> None:
    """--force: remove an earlier run's own files (its tables, events and card; anything
    else in the folder stays). Left in place, its shards were read as this run's and its
    events made a run that recorded nothing look recorded (issue 12)."""
    for table in TABLES:  # every table, the probes / gram / tasks ones too
        if (run_dir / table).is_dir() and not (run_dir / table).is_symlink():
            shutil.rmtree(run_dir / table)
    for name in (run_meta.EVENTS_FILE, META_FILE):
        if (run_dir / name).is_file():
            (run_dir / name).unlink()
    run_meta.drop_all_reserves(run_dir)
    if (run_dir / CLAIMS).is_dir() and not (run_dir / CLAIMS).is_symlink():
        shutil.rmtree(run_dir / CLAIMS)  # the rank folders its processes claimed


def child_environment(run_dir: Path, config: RecordConfig) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(BOOTSTRAP_DIR)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env[ENV_RUN_DIR] = str(run_dir.resolve())
    env[ENV_CONFIG] = config.to_json()
    env[ENV_LAUNCHER] = str(os.getpid())
    return env


def launch(command: list[str], run_dir: Path, config: RecordConfig, *, force: bool = False) -> int:
    """Run ``command`` under the recorder; returns its exit code (128+N if killed by signal N)."""
    validate_command(command)
    blind = blind_python_flags(command)
    if blind:
        _say(f"warning: {blind}; the run will hold no recording (drop the flag, or use "
             "gradscope.Recorder in the script)")
    prepare_run_dir(run_dir, command, config, force)
    try:
        outcome = run_supervised(
            command, child_environment(run_dir, config), lambda o: _finish_meta(run_dir, o, blind)
        )
    except OSError as err:
        _finish_meta(run_dir, Outcome(127, None), blind, started=False)
        raise GradscopeError(f"cannot start {command[0]}: {os_error_line(err)}") from None
    code = outcome.returncode
    return 128 - code if code < 0 else code


def end_state(outcome: Outcome) -> dict[str, object]:
    """status, exit_code, signal and end_reason of a finished child."""
    code = outcome.returncode
    exit_code = 128 - code if code < 0 else code
    killed = signal.Signals(-code).name if code < 0 and -code in signal.valid_signals() else None
    if outcome.signal is not None:
        name = signal.Signals(outcome.signal).name
        status, reason = "interrupted", f"{name} sent to gradscope record and passed on to the script"
    elif code == 0:
        status, reason = "finished", "the script exited with code 0"
    elif killed in ("SIGINT", "SIGTERM", "SIGHUP"):
        status, reason = "interrupted", f"the script was stopped by {killed}"
    elif exit_code in (129, 130, 143):
        # 128 + SIGHUP/SIGINT/SIGTERM: the script's own handler exited the way the signal
        # would (a SIGTERM sent to the training process itself, not through gradscope)
        name = signal.Signals(exit_code - 128).name
        status = "interrupted"
        reason = f"the script exited with code {exit_code} (128 + {name}: stopped by {name})"
    elif killed == "SIGKILL":
        status, reason = "crashed", "the script was killed by SIGKILL (the kernel's OOM killer sends this)"
    elif killed:
        status, reason = "crashed", f"the script was killed by {killed}"
    else:
        status, reason = "crashed", f"the script exited with code {exit_code}"
    sig = signal.Signals(outcome.signal).name if outcome.signal else killed
    return {"status": status, "exit_code": exit_code, "signal": sig, "end_reason": reason}


UNFLUSHED = "the process ended without flushing (os._exit, or a kill)"


def recording_state(run_dir: Path, outcome: Outcome, blind: str | None, meta: dict) -> dict[str, str]:
    """Did the training process record anything? ``ok`` | ``never-started`` | ``no-backward``
    | ``lost`` (steps seen, none saved) | ``unknown`` (no evidence either way, e.g. killed
    before anything was saved), with a reason.
    "no-backward" needs positive evidence: a recorder-finished event that saw 0 steps."""
    saved = any((run_dir / "steps").glob("rank-*/part-*.parquet"))
    events = _recorder_events(run_dir)
    seen = [e.get("steps") for e in events if e.get("event") == FINISHED_EVENT]
    steps = max([s for s in [meta.get("steps"), *seen] if isinstance(s, int)], default=0)
    if saved:
        return {"state": "ok", "reason": "steps were recorded"}
    if steps > 0:
        if seen:  # the recorder closed and gave its own warnings (a full or read-only disk)
            return {"state": "lost", "reason": f"the recorder saw {steps} steps; none was saved "
                    "(see its warnings and unwritten)"}
        return {"state": "lost", "reason": f"the recorder saw {steps} steps but none was saved: {UNFLUSHED}"}
    stopped = outcome.signal or (-outcome.returncode if outcome.returncode < 0 else None)
    if not any(e.get("event") == STARTED_EVENT for e in events) and stopped and not blind:
        # Interrupted or killed before the recorder started (usually while importing torch):
        # nothing says the bootstrap was missing, so do not claim it (issue 12).
        name = signal.Signals(stopped).name if stopped in signal.valid_signals() else f"signal {stopped}"
        return {"state": "unknown", "reason": f"the script was stopped by {name} before the recorder "
                "started (before it imported torch)"}
    if not any(e.get("event") == STARTED_EVENT for e in events):
        why = blind or ("no Python process imported torch with gradscope's bootstrap on its path "
                        "(a PYTHONPATH reset, another interpreter without gradscope, or no torch)")
        return {"state": "never-started", "reason": f"the recorder never started: {why}"}
    if seen:
        return {"state": "no-backward", "reason": "the recorder started but saw no backward pass or "
                "optimizer step"}
    return {"state": "unknown", "reason": "the script ended before the recorder could say what it saw"}


def _recorder_events(run_dir: Path) -> list[dict]:
    """The recorder's lifecycle events (recorder-started / recorder-finished) in events.jsonl."""
    from gradscope.store.validate import parse_events

    try:
        with open(run_dir / run_meta.EVENTS_FILE, encoding="utf-8", errors="replace") as handle:
            lines = [line for line in handle.read(MAX_EVENTS_SCAN).splitlines() if '"recorder-' in line]
    except OSError:
        return []
    return parse_events(lines, run_meta.EVENTS_FILE)[0]


def _finish_meta(run_dir: Path, outcome: Outcome, blind: str | None, started: bool = True) -> None:
    fields = end_state(outcome) if started else {
        "status": "crashed", "exit_code": 127, "end_reason": "the command could not be started"}
    try:
        meta = run_meta.read_meta(run_dir)
        fields["recording"] = recording_state(run_dir, outcome, blind, meta)
        run_meta.update_meta(run_dir, ended=now_iso(), **fields)
        run_meta.drop_all_reserves(run_dir)
    except (OSError, ValueError) as err:
        run_meta.drop_all_reserves(run_dir)
        _say(f"warning: could not finalise {run_dir / META_FILE} ({_reason(err)}); "
             f"the script's exit code still passes through")
        return
    state = fields["recording"]
    unexplained_loss = state["state"] == "lost" and state["reason"].endswith(UNFLUSHED)  # not said yet
    if started and (state["state"] in ("never-started", "no-backward") or unexplained_loss):
        _say(f"warning: nothing was recorded in {run_dir}: {state['reason']}")


def _reason(err: Exception) -> str:
    return os_error_line(err) if isinstance(err, OSError) else str(err)


def _say(line: str) -> None:
    print(f"gradscope: {line}", file=sys.stderr, flush=True)
