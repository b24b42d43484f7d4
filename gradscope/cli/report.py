"""``gradscope report RUN``: the terminal report (and, with --html, the HTML one)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gradscope.analysis.run import analyze_run
from gradscope.cli.paths import output_file
from gradscope.cli.width import WIDTH_HELP, console
from gradscope.report.terminal import render_report
from gradscope.store.reader import open_run


def report(
    run: Annotated[Path, typer.Argument(help="Run directory written by gradscope record.")],
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report here.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No terminal report; files only.")] = False,
    width: Annotated[int | None, typer.Option(min=40, max=1000, help=WIDTH_HELP)] = None,
    no_color: Annotated[bool, typer.Option("--no-color", help="Plain text output.")] = False,
) -> None:
    """Print what was recorded and what it means."""
    if html is not None:
        output_file(html, "--html", runs=(run,))
    opened = open_run(run)
    analysis = analyze_run(opened, progress=not quiet)
    if not quiet:
        render_report(opened, console(width, no_color), analysis)
    if html is not None:
        from gradscope.report.html import write_html  # matplotlib: imported only when asked for

        write_html(opened, analysis, html)
        if not quiet:
            Console(stderr=True, no_color=no_color).print(f"HTML report written to {html}", markup=False)


def register(app: typer.Typer) -> None:
    app.command()(report)
