"""`gradscope record` on a multi-task script whose only gradscope line is gradscope.tasks()."""

from __future__ import annotations

from gradscope.analysis.run import analyze_run
from gradscope.store.reader import open_run
from tests.e2e.harness import gradscope, python, run_plain, run_recorded


def _median_cos(metrics, pair: str) -> float:
    rows = metrics[(metrics["name"] == "cos") & (metrics["scope"] == "task_pair") & (metrics["key"] == pair)]
    return float(rows["value"].median())


def test_planted_task_conflict_is_recorded_flagged_and_reported(tmp_path):
    plain = run_plain(python("train_multitask.py"), tmp_path)
    recorded = run_recorded(python("train_multitask.py"), tmp_path / "run", tmp_path)
    assert plain.returncode == 0 and recorded.returncode == 0, recorded.stderr
    assert recorded.stdout == plain.stdout, "recording changed the script's output"
    assert "gradscope: warning" not in recorded.stderr

    run = open_run(tmp_path / "run")
    assert list((tmp_path / "run" / "tasks" / "rank-0").glob("part-*.parquet"))
    tasks = run.table("tasks")
    assert sorted(tasks["step"].unique()) == list(range(8))
    assert set(tasks["layer"]) == {"trunk.0", "trunk.2", "seg", "depth"}
    assert run.has("task_samples")

    analysis = analyze_run(run)
    verdict = next(v for v in analysis.verdicts if v.family == "conflict")
    assert verdict.level in ("warn", "alert") and "depth_flip" in verdict.summary
    assert _median_cos(analysis.metrics, "depth|depth_flip") < -0.5
    assert _median_cos(analysis.metrics, "depth|depth_twin") > 0.9  # the agreeing twin

    report = gradscope("report", "--no-color", str(tmp_path / "run"))
    assert report.returncode == 0, report.stderr
    assert "conflict" in report.stdout and "depth_flip" in report.stdout
    assert "per-layer conflict" in report.stdout
