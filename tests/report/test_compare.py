"""`gradscope compare`: settings diff first, verdicts, metric deltas, per-layer detail,
--fail-on rules as a CI gate."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gradscope.analysis.run import analyze_run
from gradscope.cli import app
from gradscope.report.compare import layer_detail, metric_table, settings_diff, verdict_change, verdict_levels
from gradscope.store.reader import open_run
from tests.report.conftest import GRADSCOPE, REPO, make_run
from tests.report.test_check import run_main

runner = CliRunner()


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The baseline's script with a 10x learning rate: what a user changed between runs."""
    return make_run(tmp_path_factory.mktemp("runs") / "fast", lr=1.0, seed=2, spike_at=10)


def test_deltas_and_verdict_changes(synthetic_run: Path, calm_run: Path) -> None:
    a, b = analyze_run(open_run(synthetic_run)), analyze_run(open_run(calm_run))
    table = metric_table([a, b])
    row = table.loc[("stability", "loss", "")]
    assert row[("delta_last", 1)] == row[("last", 1)] - row[("last", 0)]
    assert table.index[0][0] == "conflict"
    levels = dict(verdict_levels([a, b]))
    assert levels["conflict"] == ["alert", "ok"] and verdict_change("alert", "ok") == "better"
    assert verdict_change("no data", "ok") == "not comparable"


def test_settings_diff_shows_the_learning_rate(synthetic_run: Path, calm_run: Path, fast_run: Path) -> None:
    diff, same = settings_diff([open_run(p) for p in (synthetic_run, calm_run, fast_run)])
    assert list(diff.index) == ["lr (group 0)"]  # momentum, command, recording config: the same
    assert diff.loc["lr (group 0)", 0].startswith("0.1 → ") and diff.loc["lr (group 0)", 2].startswith("1 → ")
    assert same > 5


def test_layer_detail_orders_layers_by_change(synthetic_run: Path, fast_run: Path) -> None:
    analyses = [analyze_run(open_run(p)) for p in (synthetic_run, fast_run)]
    detail = layer_detail(analyses, "noise", "b_simple", limit=1)
    assert len(detail) == 1 and set(detail.columns) == {0, 1, "delta_1"}


def test_three_runs_config_diff_and_failing_rule_exit_1(synthetic_run: Path, calm_run: Path,
                                                       fast_run: Path) -> None:
    """Must show (issue 17): three runs, the settings that differ first, a failing
    --fail-on rule exits 1 (spawned as a user runs it, output piped: 80 columns)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "80"}
    command = [sys.executable, "-m", "gradscope", "compare", str(synthetic_run), str(calm_run),
               str(fast_run), "--fail-on", "noise.b_simple.max < 30",
               "--fail-on", "verdict.stability != alert",
               "--no-color"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    out = done.stdout
    assert out.index("settings that differ") < out.index("verdicts") < out.index("metrics: last value")
    assert "lr (group 0)" in out and "1 → 0.4963" in out
    assert "fail: noise.b_simple.max < 30 on C" in out
    assert "per layer" in out and "ΔC" in out
    assert max(len(line) for line in out.splitlines()) <= 80 and "..." not in out


def test_passing_rules_exit_0_and_typo_exit_2(synthetic_run: Path, calm_run: Path) -> None:
    runs = ["compare", str(synthetic_run), str(calm_run), "--fail-on"]
    code, out, _ = run_main([*runs, "stability.nonfinite.max == 0"])
    assert code == 0 and "pass" in out
    code, _, err = run_main([*runs, "noise.bsimple < 3"])
    assert code == 2 and "unknown metric noise.bsimple (did you mean noise.b_simple?)" in err


def test_one_run_is_a_usage_error(synthetic_run: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "gradscope", "compare", str(synthetic_run)],
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "at least two runs" in done.stderr


def test_cli_compare_with_html(synthetic_run: Path, tmp_path: Path) -> None:
    """The interactive dashboard, not images: a chart per model-scope metric with a line
    per run, a learning-rate chart per run, the settings table in its own section."""
    page = tmp_path / "compare.html"
    calm_run = make_run(tmp_path / "calm", task_cos=0.5, spike_at=None, seed=1, lr=0.5)
    result = runner.invoke(app, ["compare", str(synthetic_run), str(calm_run), "--html", str(page),
                                 "--no-color"])
    assert result.exit_code == 0, result.output
    assert "better" in result.output and "m_coherence" in result.output
    text = page.read_text()
    assert "<img" not in text and "Plotly" in text
    data = json.loads(re.search(r'id="gs-data">(.*?)</script>', text, re.S).group(1))
    by_title = {c["title"]: c for c in data["charts"]}
    loss = by_title["stability.loss"]
    assert [t["name"] for t in loss["traces"]] == ["A synthetic", "B calm"]
    metrics = analyze_run(open_run(calm_run)).metrics
    rows = metrics[(metrics["name"] == "loss") & (metrics["scope"] == "model") & (metrics["step"] >= 0)]
    assert loss["traces"][1]["y"] == [float(f"{v:.7g}") for v in rows.sort_values("step")["value"]]
    lrs = [c for c in data["charts"] if c["metric"] == "optimizer.lr"]
    assert [c["title"] for c in lrs] == ["learning rate · A synthetic", "learning rate · B calm"]
    assert lrs[0]["traces"][0]["name"] == "group 0"
    assert len({c["id"] for c in data["charts"]}) == len(data["charts"])
    assert all(f'id="{c["id"]}"' in text for c in data["charts"])
    settings = text.split('id="settings"')[1].split("</section>")[0]
    assert 'data-table="settings"' in settings and "lr" in settings


def test_compare_with_minimal_run(synthetic_run: Path, minimal_run: Path) -> None:
    result = runner.invoke(app, ["compare", str(minimal_run), str(synthetic_run)])
    assert result.exit_code == 0, result.output


def test_compare_says_how_many_layers_it_left_out(tmp_path: Path) -> None:
    """Ten layers: the per-layer tables show eight and say "… 2 more"; metric names stay whole."""
    layers = tuple(f"encoder.layers.{i}.fc" for i in range(10))
    a = make_run(tmp_path / "a", layers=layers, tasks=(), with_samples=False)
    b = make_run(tmp_path / "b", layers=layers, tasks=(), with_samples=False, seed=3, lr=0.01)
    done = subprocess.run([str(GRADSCOPE), "compare", str(a), str(b), "--width", "80"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "… 2 more layers" in done.stdout
    assert "stability.init_distance_log_slope" in done.stdout
