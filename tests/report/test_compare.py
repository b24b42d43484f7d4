"""`gradscope compare`: metrics side by side and verdict changes."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from typer.testing import CliRunner

from gradscope.analysis.run import analyze_run
from gradscope.cli import app
from gradscope.report.compare import compare_metrics, verdict_changes
from gradscope.store.reader import open_run

runner = CliRunner()


def test_deltas_and_verdict_changes(synthetic_run: Path, calm_run: Path) -> None:
    a, b = analyze_run(open_run(synthetic_run)), analyze_run(open_run(calm_run))
    table = compare_metrics(a, b)
    row = table[(table["family"] == "stability") & (table["name"] == "loss")].iloc[0]
    assert row["delta_last"] == row["b_last"] - row["a_last"]
    assert table["family"].iloc[0] == "conflict"
    assert ("conflict", "alert", "ok", "better") in verdict_changes(a, b)


def test_cli_compare_with_html(synthetic_run: Path, calm_run: Path, tmp_path: Path) -> None:
    page = tmp_path / "compare.html"
    result = runner.invoke(app, ["compare", str(synthetic_run), str(calm_run), "--html", str(page),
                                 "--no-color"])
    assert result.exit_code == 0, result.output
    assert "better" in result.output and "m_coherence" in result.output
    images = []

    class Images(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list) -> None:
            if tag == "img":
                images.append(dict(attrs)["src"])

    Images().feed(page.read_text())
    assert len(images) >= 4 and all(src.startswith("data:image/png;base64,") for src in images)


def test_compare_with_minimal_run(synthetic_run: Path, minimal_run: Path) -> None:
    result = runner.invoke(app, ["compare", str(minimal_run), str(synthetic_run)])
    assert result.exit_code == 0, result.output
