"""Run a training script plain and under ``gradscope record``, the way a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    reference: dict | None


def _env(reference: Path | None, extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADSCOPE_")}
    env.pop("GS_REFERENCE", None)
    if reference is not None:
        env["GS_REFERENCE"] = str(reference)
    env.update(extra or {})
    return env


def _result(proc: subprocess.CompletedProcess, reference: Path | None) -> Result:
    data = json.loads(reference.read_text()) if reference and reference.exists() else None
    return Result(proc.returncode, proc.stdout, proc.stderr, data)


def run_plain(
    command: list[str], tmp: Path, env: dict[str, str] | None = None, cwd: Path = SCRIPTS
) -> Result:
    reference = tmp / "reference-plain.json"
    proc = subprocess.run(
        command, cwd=cwd, env=_env(reference, env), capture_output=True, text=True, timeout=300
    )
    return _result(proc, reference)


def gradscope(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, reference: Path | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gradscope", *args],
        cwd=cwd,
        env=_env(reference, env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def run_recorded(
    command: list[str],
    run_dir: Path,
    tmp: Path,
    options: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    cwd: Path = SCRIPTS,
) -> Result:
    reference = tmp / "reference-recorded.json"
    proc = gradscope(
        "record", "--out", str(run_dir), *options, "--", *command, env=env, cwd=cwd, reference=reference
    )
    return _result(proc, reference)


def python(script: str, *args: str) -> list[str]:
    return [sys.executable, str(SCRIPTS / script), *args]
