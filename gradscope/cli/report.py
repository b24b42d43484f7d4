"""``gradscope report RUN``: the terminal report (and, with --html, the interactive HTML
one; with --figures, static PNG / PDF figures)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gradscope.analysis.run import analyze_run
from gradscope.cli.paths import output_file
from gradscope.cli.width import MIN_WIDTH, WIDTH_HELP, console
from gradscope.errors import GradscopeError
from gradscope.errors import short_path as shown
from gradscope.report.terminal import render_report
from gradscope.store.reader import open_run
from gradscope.store.schema import TABLES


def figures_folder(path: Path, run: Path) -> Path:
    """A folder to write figures into: not an existing file, not inside the run's tables."""
    if path.exists() and not path.is_dir():
        raise GradscopeError(f"--figures {shown(path)} is a file; give a folder")
    try:
        target, root = path.resolve(), run.resolve()
        inside = any(target.is_relative_to(root / table) for table in TABLES)
    except (OSError, RuntimeError):
        inside = False  # unresolvable: writing there fails with its own one line
    if inside:
        raise GradscopeError(f"--figures {shown(path)} would write into the run's own data; "
                             "give another folder")
    return path


def report(
    run: Annotated[Path, typer.Argument(help="Run directory written by gradscope record.")],
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained interactive HTML report here.")
    ] = None,
    figures: Annotated[
        Path | None,
        typer.Option("--figures", help="Also write static figures (PNG and PDF) into this folder."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No terminal report; files only.")] = False,
    width: Annotated[int | None, typer.Option(min=MIN_WIDTH, max=1000, help=WIDTH_HELP)] = None,
    no_color: Annotated[bool, typer.Option("--no-color", help="Plain text output.")] = False,
) -> None:
    """Print what was recorded and what it means."""
    if html is not None:
        output_file(html, "--html", runs=(run,))
    if figures is not None:
        figures_folder(figures, run)
    opened = open_run(run)
    analysis = analyze_run(opened, progress=not quiet)
    if not quiet:
        render_report(opened, console(width, no_color), analysis)
    notes = Console(stderr=True, no_color=no_color)
    if html is not None:
        from gradscope.report.html import write_html  # plotly: imported only when asked for

        write_html(opened, analysis, html)
        if not quiet:
            notes.print(f"HTML report written to {html}", markup=False)
    if figures is not None:
        from gradscope.report.figures import write_figures  # matplotlib: imported only when asked for

        written = write_figures(opened, analysis, figures)
        if not quiet:
            notes.print(f"{len(written)} figure files written to {figures}", markup=False)


def register(app: typer.Typer) -> None:
    app.command()(report)
