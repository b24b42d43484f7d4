"""`gradscope demo`: the README's first command records and reports its planted problems."""

from __future__ import annotations

from gradscope.analysis.run import analyze_run
from gradscope.store.reader import open_run
from tests.e2e.harness import gradscope


def test_demo_records_and_reports_its_planted_problems(tmp_path):
    proc = gradscope("demo", "--out", str(tmp_path / "demo"), "--steps", "90", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "verdicts" in proc.stdout and "per-sample coverage" in proc.stdout
    run = open_run(tmp_path / "demo")
    verdicts = {v.family: v for v in analyze_run(run).verdicts}
    assert verdicts["conflict"].level == "alert", verdicts["conflict"].summary
    assert verdicts["stability"].level in ("warn", "alert"), verdicts["stability"].summary
