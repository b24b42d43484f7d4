"""Golden outputs of `gradscope report` and `gradscope compare` at 80 and 120 columns.

The runs are synthetic and seeded (conftest.make_run) with fixed timestamps and versions,
so the text is the same on every machine. After an intended change of the layout,
regenerate the goldens and review the diff:

    GRADSCOPE_UPDATE_GOLDENS=1 python -m pytest tests/report/test_layout_golden.py
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.report.conftest import REPO, make_run

GOLDENS = Path(__file__).parent / "goldens"
FIXED = {"started": "2026-01-01T00:00:00+0000", "ended": "2026-01-01T00:05:00+0000",
         "python_version": "3.11", "gradscope_version": "0.1.0"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """base, calm (no conflict, no spike) and fast (10x the learning rate), in one folder."""
    root = tmp_path_factory.mktemp("golden")
    make_run(root / "base", meta_extra=FIXED)
    make_run(root / "calm", task_cos=0.5, spike_at=None, seed=1, meta_extra=FIXED)
    make_run(root / "fast", lr=1.0, seed=2, spike_at=10, meta_extra=FIXED)
    return root


def gradscope(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "gradscope", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def check_golden(name: str, text: str) -> None:
    text = "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
    path = GOLDENS / name
    if os.environ.get("GRADSCOPE_UPDATE_GOLDENS"):
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden {name}: run with GRADSCOPE_UPDATE_GOLDENS=1"
    assert text == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("width", [80, 120])
def test_report_fits_and_matches_golden(runs: Path, width: int) -> None:
    done = gradscope(["report", "base", "--width", str(width), "--no-color"], runs)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= width
    assert not any("..." in line for line in lines)  # numbers and headers are never cropped
    check_golden(f"report-{width}.txt", done.stdout)


@pytest.mark.parametrize("width", [80, 120])
def test_compare_fits_and_matches_golden(runs: Path, width: int) -> None:
    done = gradscope(["compare", "base", "calm", "fast", "--width", str(width), "--no-color"], runs)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= width
    check_golden(f"compare-{width}.txt", done.stdout)


CUT_NUMBER = re.compile(r"\d…|…\d|\d\.\.\.")


@pytest.mark.parametrize("width", [60, 66])
def test_narrowest_widths_keep_numbers_whole(runs: Path, width: int) -> None:
    """At the narrowest accepted width no number loses digits (README: "never cut")."""
    for args in (["report", "base"], ["compare", "base", "calm", "fast"]):
        done = gradscope([*args, "--width", str(width), "--no-color"], runs)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert max(len(line) for line in lines) <= width
        assert not [line for line in lines if CUT_NUMBER.search(line)], args


def test_narrower_than_60_is_refused(runs: Path) -> None:
    done = gradscope(["report", "base", "--width", "59"], runs)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
