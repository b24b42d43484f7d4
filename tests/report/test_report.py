"""`gradscope report`: the terminal report's sections, --quiet, --html, missing tables."""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from gradscope.analysis.run import analyze_run, read_tables
from gradscope.analysis.types import FAMILIES
from gradscope.cli import app
from gradscope.report.terminal import render_report
from gradscope.store.reader import open_run

runner = CliRunner()


def _render(run: Path, width: int = 140) -> str:
    console = Console(width=width, record=True, no_color=True, file=io.StringIO())
    render_report(open_run(run), console)
    return console.export_text()


def test_sections_in_reading_order(synthetic_run: Path) -> None:
    text = _render(synthetic_run)
    anchors = ["gradscope run", "verdicts", *FAMILIES, "loss  ", "per-sample coverage", "recorder warnings"]
    positions = [text.index(anchor) for anchor in anchors]
    assert positions == sorted(positions)


def test_verdicts_and_evidence_shown(synthetic_run: Path) -> None:
    text = _render(synthetic_run)
    assert re.search(r"conflict\s+│\s+✖ alert\s+│ strong conflict", text)
    assert "task pairs" in text and "update_ratio over steps" in text


def test_cli_report_prints_and_exits_0(synthetic_run: Path) -> None:
    result = runner.invoke(app, ["report", str(synthetic_run), "--no-color"])
    assert result.exit_code == 0, result.output
    assert "verdicts" in result.output and "stability" in result.output


def test_quiet_writes_only_the_html(synthetic_run: Path, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    result = runner.invoke(app, ["report", str(synthetic_run), "--quiet", "--html", str(page)])
    assert result.exit_code == 0, result.output
    assert result.output == ""
    assert page.read_text().startswith("<!DOCTYPE html>")


def test_run_without_per_sample_tables(minimal_run: Path) -> None:
    run = open_run(minimal_run)
    tables, samples = read_tables(run)
    assert set(tables) == {"steps", "layers"} and samples is None
    analysis = analyze_run(run)
    assert [v.family for v in analysis.verdicts] == list(FAMILIES)
    levels = {v.family: v.level for v in analysis.verdicts}
    assert levels == {"conflict": "no data", "coherence": "no data", "alignment": "no data",
                      "noise": "no data", "stability": "ok"}
    text = _render(minimal_run)
    assert "∅ no data  no data: per-sample gradient norms (S1/S2) not recorded" in text
    assert "✓ ok  no data" not in text


def test_minimal_profile_is_named_as_the_reason(tmp_path: Path) -> None:
    from tests.report.conftest import make_run

    run = make_run(tmp_path / "run", tasks=(), with_samples=False,
                   meta_extra={"config": {"profile": "minimal", "every": 1}})
    verdicts = {v.family: v for v in analyze_run(open_run(run)).verdicts}
    assert verdicts["noise"].reason == "profile"
    assert verdicts["noise"].summary == ("no data: profile minimal records no per-sample statistics "
                                         "(record with --profile standard)")
    assert verdicts["conflict"].reason == "not recorded"


def test_recorded_run_report(recorded_run: Path) -> None:
    result = runner.invoke(app, ["report", str(recorded_run), "--no-color"])
    assert result.exit_code == 0, result.output
    assert "coherence" in result.output and "m_coherence" in result.output


def test_missing_run_is_exit_2(tmp_path: Path) -> None:
    from tests.report.test_check import run_main

    code, _, err = run_main(["report", str(tmp_path / "nope")])
    assert code == 2 and "no such run directory" in err
