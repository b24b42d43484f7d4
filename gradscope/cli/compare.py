"""``gradscope compare RUN_A RUN_B``: two runs side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gradscope.analysis.run import analyze_run
from gradscope.cli.paths import output_file
from gradscope.report.compare import comparison_renderables, write_compare_html
from gradscope.store.reader import open_run


def compare(
    run_a: Annotated[Path, typer.Argument(help="Run A (the baseline).")],
    run_b: Annotated[Path, typer.Argument(help="Run B (the change).")],
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write both runs' curves overlaid.")
    ] = None,
    no_color: Annotated[bool, typer.Option("--no-color", help="Plain text output.")] = False,
) -> None:
    """Metrics (last and mean, B - A) and verdict changes of two runs."""
    if html is not None:
        output_file(html, "--html", runs=(run_a, run_b))
    opened_a, opened_b = open_run(run_a), open_run(run_b)
    a, b = analyze_run(opened_a, progress=True), analyze_run(opened_b, progress=True)
    console = Console(no_color=no_color, highlight=False)
    for renderable in comparison_renderables(opened_a.name, opened_b.name, a, b):
        console.print(renderable)
    if html is not None:
        write_compare_html(opened_a, a, opened_b, b, html)


def register(app: typer.Typer) -> None:
    app.command()(compare)
