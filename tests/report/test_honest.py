"""Honest runs (issue 11): "no data" is never "ok", analysis failures are loud.

Every run here is a synthetic run directory written with the store's schemas (conftest),
read back by the real CLI in a subprocess, as a CI job would: `report`, `metrics` and
`check` with NumPy's RuntimeWarnings turned into errors.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from gradscope.analysis.engine import RAISE_ENV, analyze_tables
from gradscope.analysis.run import analyze_run
from gradscope.store.reader import open_run
from tests.report.conftest import REPO, make_empty_run, make_run

DEFAULT = str(REPO / "configs" / "default.toml")
GATE = "verdict.* != alert"


def cli(*args: str) -> subprocess.CompletedProcess:
    """`python -W error::RuntimeWarning -m gradscope ARGS` with this checkout first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADSCOPE_")}
    env["PYTHONPATH"] = str(REPO)
    command = [sys.executable, "-W", "error::RuntimeWarning", "-m", "gradscope", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=120)


def check(run: Path, *extra: str) -> subprocess.CompletedProcess:
    return cli("check", str(run), "--config", DEFAULT, "--rule", GATE, "--no-color", *extra)


def levels(run: Path) -> dict[str, str]:
    return {v.family: v.level for v in analyze_run(open_run(run)).verdicts}


# ------------------------------------------------------------------ runs without one step
@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({}, "no training step was recorded"),
        ({"tables": ("steps",)}, "no training step was recorded"),
        ({"status": "crashed", "exit_code": 1}, "the run crashed before its first step (exit code 1)"),
        ({"recording": {"state": "never-started", "reason": "torch was never imported"},
          "tables": ("steps",)}, "the recorder never started: torch was never imported"),
        ({"recording": {"state": "no-backward", "reason": ""}}, "the recorder saw no backward pass"),
    ],
    ids=["meta-only", "empty-steps", "crashed", "never-started", "no-backward"],
)
def test_run_without_steps_is_no_data_everywhere_and_fails_check(tmp_path: Path, options: dict,
                                                                 reason: str) -> None:
    run = make_empty_run(tmp_path / "run", **options)
    assert set(levels(run).values()) == {"no data"}
    report = cli("report", str(run), "--no-color", "--html", str(tmp_path / "r.html"))
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "r.html").read_text()
    assert '<p class="gap">NO DATA: ' in page and page.count('class="badge nodata">no data<') == 10
    assert 'class="badge ok"' not in page
    first = report.stdout.splitlines()[0]
    assert first.startswith("NO DATA: ") and reason.split(":")[0] in " ".join(report.stdout.split())
    assert "✓ ok" not in report.stdout and "recorder warnings: none logged, yet the run has no data" in (
        " ".join(report.stdout.split()))
    done = check(run, "--format", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    rules = json.loads(done.stdout)["rules"]
    assert {r["status"] for r in rules} == {"fail"} and len(rules) == 8
    assert all(r["note"].startswith("no data: ") for r in rules)
    assert "fail: verdict.* != alert no data: " in " ".join(check(run).stdout.split())
    metrics = cli("metrics", str(run))
    assert metrics.returncode == 0 and json.loads(metrics.stdout) == []
    assert metrics.stderr.count("no data: ") == 5


def test_steps_table_present_but_recording_says_no_backward(tmp_path: Path) -> None:
    """meta.json's recording state wins over tables that hold rows (the other helper's field)."""
    run = make_run(tmp_path / "run", steps=6, tasks=(),
                   meta_extra={"recording": {"state": "no-backward", "reason": "closure never ran"}})
    analysis = analyze_run(open_run(run))
    assert analysis.gap == "the recorder saw no backward pass: closure never ran"
    assert {v.level for v in analysis.verdicts} == {"no data"}


# ------------------------------------------------------------------ a short smoke run
def test_four_step_run_passes_default_config_with_skipped_history_rules(tmp_path: Path) -> None:
    run = make_run(tmp_path / "short", steps=4, tasks=(), spike_at=None)
    done = check(run, "--format", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    rules = {r["rule"]: r for r in json.loads(done.stdout)["rules"]}
    spike = rules["stability.loss_spike_z.max < 12"]
    assert spike["status"] == "skipped"
    assert spike["note"] == "stability.loss_spike_z needs 11 recorded steps of history; the run has 4"
    assert rules["stability.nonfinite.max == 0"]["status"] == "pass"
    table = check(run)
    assert "skipped: stability.grad_norm_spike_z.max < 12  stability.grad_norm_spike_z needs 11" in (
        " ".join(table.stdout.split()).replace("< 12 stability", "< 12  stability"))
    assert levels(run)["alignment"] == "no data"  # one epoch: the epoch score cannot fall
    report = cli("report", str(run), "--no-color")
    assert report.stderr == "" and "✖ failed" not in report.stdout


def test_spike_rule_on_a_long_enough_run_with_nan_still_fails(tmp_path: Path) -> None:
    """Skipping is only for runs too short for the metric, never a quiet pass otherwise."""
    run = make_run(tmp_path / "long", steps=24, tasks=())
    done = cli("check", str(run), "--rule", "alignment.gwa_head.first > 99", "--format", "json")
    assert done.returncode == 1
    assert json.loads(done.stdout)["rules"][0]["status"] == "fail"


# ------------------------------------------------------------------ a family that raises
def _shuffle_samples(run: Path) -> None:
    """Rewrite SAMPLES as two shards whose steps go backwards: the reducer refuses them."""
    folder = run / "samples" / "rank-0"
    table = pq.read_table(folder / "part-000000.parquet")
    late = table.filter(pq.read_table(folder / "part-000000.parquet").column("step").to_numpy() >= 5)
    early = table.filter(table.column("step").to_numpy() < 5)
    pq.write_table(late, folder / "part-000000.parquet")
    pq.write_table(early, folder / "part-000001.parquet")


def test_failed_family_is_failed_and_check_fails_its_rules(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", steps=12, tasks=())
    _shuffle_samples(run)
    found = levels(run)
    assert found["coherence"] == "failed" and found["stability"] != "failed"
    done = cli("check", str(run), "--rule", "verdict.stability != alert", "--rule",
               "coherence.m_coherence.median > 0", "--rule", "verdict.coherence != alert", "--format", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    status = {r["rule"]: (r["status"], r["note"]) for r in json.loads(done.stdout)["rules"]}
    assert status["verdict.stability != alert"][0] == "pass"
    for rule in ("coherence.m_coherence.median > 0", "verdict.coherence != alert"):
        assert status[rule][0] == "fail"
        assert "analysis failed: ValueError: samples rows are not in step order" in status[rule][1]
    report = cli("report", str(run), "--no-color")
    assert "✖ failed" in report.stdout and report.returncode == 0
    metrics = cli("metrics", str(run), "--family", "coherence")
    assert "gradscope metrics: coherence: analysis failed: ValueError" in metrics.stderr


def test_raise_switch_propagates_the_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path / "run", steps=12, tasks=())
    _shuffle_samples(run)
    monkeypatch.setenv(RAISE_ENV, "1")
    with pytest.raises(ValueError, match="step order"):
        analyze_run(open_run(run))
    steps = pd.DataFrame({"step": [0, 1], "loss": [1.0, 0.5]})
    broken = {"steps": steps, "layers": pd.DataFrame({"step": [0], "layer": ["a"], "grad_norm": ["x"]})}
    with pytest.raises(ValueError, match="could not convert string to float"):
        analyze_tables(broken, raise_errors=True)
    monkeypatch.delenv(RAISE_ENV)
    verdict = {v.family: v for v in analyze_tables(broken).verdicts}["stability"]
    assert verdict.level == "failed" and verdict.summary.startswith("analysis failed: ValueError")
    assert "\n" not in verdict.summary


# ------------------------------------------------------------------ a zeroed Inf gradient
def test_zeroed_inf_gradient_is_flagged_and_never_stored(tmp_path: Path) -> None:
    run = make_run(tmp_path / "inf", steps=24, tasks=(), spike_at=None, inf_at=12)
    analysis = analyze_run(open_run(run))
    stability = analysis.verdict("stability")
    assert stability is not None and stability.level == "alert" and stability.steps == (12,)
    assert any("inf/NaN per-sample gradients (2 rows)" in d and "at step 12" in d for d in stability.details)
    metrics = cli("metrics", str(run))
    assert metrics.returncode == 0 and metrics.stderr == "", metrics.stderr
    rows = pd.DataFrame(json.loads(metrics.stdout))
    per_sample = rows[rows["family"].isin(["coherence", "noise", "alignment", "conflict"])]
    assert not per_sample["value"].map(lambda v: v is not None and math.isinf(v)).any()
    at_12 = per_sample[(per_sample["step"] == 12) & (per_sample["name"] != "masked_nonfinite")]
    assert at_12.empty, at_12
    masked = rows[(rows["name"] == "masked_nonfinite")]
    assert set(masked["family"]) == {"coherence", "noise"} and set(masked["step"]) == {12}
    assert "left out: a per-sample gradient was inf/NaN" in " ".join(analysis.verdict("coherence").details)
    report = cli("report", str(run), "--no-color", "--html", str(tmp_path / "r.html"))
    assert report.returncode == 0 and "RuntimeWarning" not in report.stderr, report.stderr
    assert "non-finite loss/gradients at step 12" in report.stdout
    assert "✖ failed" not in report.stdout  # a RuntimeWarning (an error here) would fail a family
    assert check(run).returncode == 1


# ------------------------------------------------------------------ coverage from evidence
def test_coverage_reads_rows_steps_and_never_shows_an_empty_layer_as_covered(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", steps=6, tasks=(), layers=("fc1", "fc2", "fc3"))
    meta = json.loads((run / "meta.json").read_text())
    meta["layers"][0].update(rows_steps=6, first_step=0, last_step=5, reasons={})
    meta["layers"][1].update(covered=True, rows_steps=0, reasons={"batch dimension not found": 6})
    meta["layers"][2].update(rows_steps=2, first_step=0, last_step=1, reasons={"hook disabled": 4})
    (run / "meta.json").write_text(json.dumps(meta))
    done = cli("report", str(run), "--no-color", "--html", str(tmp_path / "r.html"))
    report = " ".join(done.stdout.split())
    assert "not covered: fc2 (Linear, 6 params): no rows recorded: batch dimension not found (6 steps)" in (
        report)
    assert "partly covered: fc3: rows at 2 steps (0-1); missing: hook disabled (4 steps)" in report
    assert "ghost 66.7%, none 33.3%" in report
    page = (tmp_path / "r.html").read_text()
    assert "no: no rows recorded: batch dimension not found (6 steps)" in page


# ------------------------------------------------------------------ lists that are cut say so
def test_dead_layer_at_every_step_says_all(tmp_path: Path) -> None:
    from gradscope.analysis import stability

    layers = pd.DataFrame({"step": range(240), "layer": "fc", "grad_norm": 0.0})
    verdict = stability.stability_verdict(stability.stability_metrics(None, layers))
    assert "dead layer fc at all 240 steps (0-239)" in verdict.summary


def test_full_run_prints_nothing_on_stderr(synthetic_run: Path, tmp_path: Path) -> None:
    """Every family has data: no state line, and no NumPy RuntimeWarning (an error here)."""
    metrics = cli("metrics", str(synthetic_run))
    assert metrics.returncode == 0 and metrics.stderr == "", metrics.stderr
    report = cli("report", str(synthetic_run), "--quiet", "--html", str(tmp_path / "r.html"))
    assert report.returncode == 0 and report.stderr == "", report.stderr
