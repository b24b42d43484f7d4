"""``gradscope report RUN``: the terminal report (and, with --html, the HTML one)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gradscope.report.terminal import render_report
from gradscope.store.reader import open_run


def report(
    run: Annotated[Path, typer.Argument(help="Run directory written by gradscope record.")],
    no_color: Annotated[bool, typer.Option("--no-color", help="Plain text output.")] = False,
) -> None:
    """Print what was recorded and what it means."""
    console = Console(no_color=no_color, highlight=False)
    render_report(open_run(run), console)


def register(app: typer.Typer) -> None:
    app.command()(report)
