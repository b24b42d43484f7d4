"""The parent side of ``gradscope record``: prepare the run directory, run the command.

The command runs as a child process with the bootstrap folder first on PYTHONPATH (its
``sitecustomize`` starts the recorder inside every Python process that imports torch)
and the run directory and configuration in the environment. Standard streams are
inherited, signals reach the child, and the child's exit code is returned unchanged.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from gradscope.errors import GradscopeError
from gradscope.record.config import RecordConfig
from gradscope.store.meta import META_FILE, new_meta, now_iso, read_meta, write_json_atomic

BOOTSTRAP_DIR = Path(__file__).parent / "inject" / "bootstrap"
ENV_RUN_DIR = "GRADSCOPE_RUN_DIR"
ENV_CONFIG = "GRADSCOPE_CONFIG"


def default_run_dir(command: list[str]) -> Path:
    """runs/<script stem>-<time>, e.g. runs/train-20261123-101500."""
    script = next((part for part in command[1:] if part.endswith(".py")), None)
    stem = Path(script).stem if script else Path(command[0]).name if command else "run"
    return Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare_run_dir(run_dir: Path, command: list[str], config: RecordConfig, force: bool) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise GradscopeError(f"--out {run_dir} is a file, not a directory")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not force:
        raise GradscopeError(f"run directory {run_dir} is not empty (pass --force to reuse it)")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / META_FILE, new_meta(command, _config_dict(config)))
    except OSError as err:
        raise GradscopeError(f"cannot write run directory {run_dir}: {err.strerror}") from None


def _config_dict(config: RecordConfig) -> dict:
    import json

    return json.loads(config.to_json())


def child_environment(run_dir: Path, config: RecordConfig) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(BOOTSTRAP_DIR)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env[ENV_RUN_DIR] = str(run_dir.resolve())
    env[ENV_CONFIG] = config.to_json()
    return env


def launch(command: list[str], run_dir: Path, config: RecordConfig, *, force: bool = False) -> int:
    """Run ``command`` under the recorder; returns its exit code (128+N if killed by signal N)."""
    if not command:
        raise GradscopeError("no command to record: put it after --, e.g. -- python train.py")
    if shutil.which(command[0]) is None and not Path(command[0]).exists():
        raise GradscopeError(f"command not found: {command[0]}")
    prepare_run_dir(run_dir, command, config, force)
    child = subprocess.Popen(command, env=child_environment(run_dir, config))
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    # Ctrl-C reaches the child through the terminal; SIGTERM sent to us is passed on.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signum))
    try:
        returncode = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    exit_code = 128 - returncode if returncode < 0 else returncode
    _finish_meta(run_dir, returncode, exit_code)
    return exit_code


def _finish_meta(run_dir: Path, returncode: int, exit_code: int) -> None:
    interrupted = returncode in (-signal.SIGINT, -signal.SIGTERM) or exit_code == 130
    status = "finished" if exit_code == 0 else "interrupted" if interrupted else "crashed"
    try:
        meta = read_meta(run_dir)
        meta.update(status=status, exit_code=exit_code, ended=now_iso())
        write_json_atomic(run_dir / META_FILE, meta)
    except (OSError, ValueError):
        pass  # the run directory went away or is unwritable; the exit code still passes through
