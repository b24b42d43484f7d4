"""The registry of metric names (gradscope/analysis/names.py) against what the analysis
emits and what the report and shipped configs name: a name missing there would make
``gradscope check`` reject a real metric. The failure message lists what to add."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from gradscope.analysis.names import METRICS
from gradscope.analysis.run import analyze_run
from gradscope.analysis.thresholds import GATES
from gradscope.report.sections import CURVES, HIDDEN, SCOPE_TABLES
from gradscope.store.reader import open_run
from tests.report.conftest import GRADSCOPE, REPO, make_run


def unlisted(names: set[tuple[str, str]]) -> list[str]:
    return sorted(f"{f}.{n}" for f, n in names if f in METRICS and n not in METRICS[f])


def emitted(run: Path) -> set[tuple[str, str]]:
    metrics = analyze_run(open_run(run)).metrics
    return set(zip(metrics["family"].astype(str), metrics["name"].astype(str)))


def test_every_emitted_name_is_registered(tmp_path: Path, recorded_run: Path) -> None:
    runs = [make_run(tmp_path / "full"), make_run(tmp_path / "minimal", tasks=(), with_samples=False),
            make_run(tmp_path / "inf", inf_at=5, spike_at=None), recorded_run]
    missing = unlisted(set().union(*map(emitted, runs)))
    assert not missing, f"add to gradscope/analysis/names.py METRICS: {', '.join(missing)}"


@pytest.mark.slow
def test_demo_run_names_are_registered(tmp_path: Path) -> None:
    done = subprocess.run([str(GRADSCOPE), "demo", "--out", str(tmp_path / "demo"), "--steps", "40"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    if done.returncode != 0:
        pytest.skip(f"demo failed here: {done.stderr[-300:]}")
    missing = unlisted(emitted(tmp_path / "demo"))
    assert not missing, f"add to gradscope/analysis/names.py METRICS: {', '.join(missing)}"


def test_names_the_report_and_configs_use_are_registered() -> None:
    used = {(f, n) for f, names in CURVES.items() for n in names}
    used |= {(f, n) for (f, _), spec in SCOPE_TABLES.items() for n in (spec.primary, *spec.others)}
    used |= {(m.group(1), m.group(2)) for gates in GATES.values() for g in gates
             if (m := re.match(r"(\w+)\.(\w+)", g))}
    missing = unlisted(used)
    assert not missing, f"add to gradscope/analysis/names.py METRICS: {', '.join(missing)}"
    everywhere = set().union(*METRICS.values())
    assert HIDDEN <= everywhere, f"add to gradscope/analysis/names.py METRICS: {HIDDEN - everywhere}"
