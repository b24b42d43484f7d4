"""Fixtures of the fault tests: a run recorded by gradscope's own writer (page checksums),
and an in-process CLI runner (fast enough for hypothesis)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pytest

from tests.fault import harness


@pytest.fixture(scope="session")
def recorded_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("recorded") / "run"
    done = harness.record(run_dir, "--steps", "30")
    assert done.returncode == 0, done.stderr
    return run_dir


@pytest.fixture
def run_copy(recorded_run: Path, tmp_path: Path) -> Callable[[str], Path]:
    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(recorded_run, target)
        return target

    return copy


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run ``gradscope ARGS`` in this process: (exit code, stdout, stderr)."""
    from gradscope.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        with mock.patch.object(sys, "argv", ["gradscope", *argv]):
            try:
                main()
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def assert_one_line_error(code: int, err: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("gradscope:")]
    assert len(lines) == 1, err
