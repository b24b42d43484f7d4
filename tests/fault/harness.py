"""Spawning ``gradscope record`` on train_loop.py and poking it the way schedulers do."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TRAIN = HERE / "train_loop.py"
INJECT = HERE / "inject"


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADSCOPE_", "GS_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(INJECT), str(REPO)])
    env.update(extra)
    return env


@dataclass
class Recording:
    """A running ``gradscope record`` in its own session (so killpg never reaches pytest)."""

    proc: subprocess.Popen
    run_dir: Path
    lines: list[str] = field(default_factory=list)

    def wait_for_step(self, step: int, limit: float = 240.0) -> None:
        """Read the script's output until it printed ``step N`` (fails if it ends first)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"training ended before step {step}: {self.lines[-5:]}")
            self.lines.append(line.strip())
            if line.strip() == f"step {step}":
                return
        raise AssertionError(f"no step {step} within the limit")

    @property
    def child_pid(self) -> int:
        return int(next(line for line in self.lines if line.startswith("pid "))[4:])

    def last_step(self) -> int:
        steps = [int(line[5:]) for line in self.lines if line.startswith("step ")]
        return steps[-1] if steps else -1

    def finish(self, limit: float = 240.0) -> tuple[int, str]:
        out, err = self.proc.communicate(timeout=limit)
        self.lines += out.splitlines()
        return self.proc.returncode, err


def start(run_dir: Path, *train_args: str, env: dict[str, str] | None = None) -> Recording:
    command = [sys.executable, "-m", "gradscope", "record", "--out", str(run_dir), "--",
               sys.executable, str(TRAIN), *train_args]
    proc = subprocess.Popen(command, env=env or environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    return Recording(proc, run_dir)


def record(run_dir: Path, *train_args: str, env: dict[str, str] | None = None,
           python_flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "gradscope", "record", "--out", str(run_dir), "--",
               sys.executable, *python_flags, str(TRAIN), *train_args]
    return subprocess.run(command, env=env or environment(), capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def gradscope(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gradscope", *args], env=environment(),
                          capture_output=True, text=True, timeout=300)


def meta(run_dir: Path) -> dict:
    return json.loads((run_dir / "meta.json").read_text())


def rows(run_dir: Path, table: str) -> int:
    return sum(pq.read_metadata(f).num_rows for f in (run_dir / table).glob("rank-*/part-*.parquet"))


def leftovers(run_dir: Path) -> list[str]:
    """Temporary files left in the run directory (meta.json's; shard .tmp files)."""
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.name.endswith(".tmp"))


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pid: int, limit: float = 60.0) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.1)
    return False


def signal_group(recording: Recording, signum: int) -> None:
    os.killpg(os.getpgid(recording.proc.pid), signum)


def kill(pid: int, signum: int = signal.SIGKILL) -> None:
    os.kill(pid, signum)
