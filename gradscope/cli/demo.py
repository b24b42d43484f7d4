"""``gradscope demo``: record the built-in demo with ``gradscope record``, then report it."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gradscope.cli.record import require_torch
from gradscope.record.config import RecordConfig
from gradscope.record.launch import launch


def demo(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Run directory.")] = None,
    steps: Annotated[int, typer.Option(min=10, help="Training steps.")] = 240,
    html: Annotated[Path | None, typer.Option(help="Also write the HTML report here.")] = None,
) -> None:
    """Train a small two-task model with planted problems, record it, and report it."""
    require_torch("demo")
    run_dir = out or Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    console = Console(stderr=True)
    console.print(f"[bold]gradscope demo[/]: recording {run_dir}")
    command = [sys.executable, "-m", "gradscope.demo.train", "--steps", str(steps)]
    code = launch(command, run_dir, RecordConfig.from_options(), force=True)
    if code != 0:
        raise typer.Exit(code)
    from gradscope.report.terminal import render_report
    from gradscope.store.reader import open_run

    run = open_run(run_dir)
    render_report(run, Console())
    if html is not None:
        from gradscope.analysis.run import analyze_run
        from gradscope.report.html import write_html

        write_html(run, analyze_run(run, progress=False), html)
        console.print(f"HTML report: {html}")


def register(app: typer.Typer) -> None:
    app.command()(demo)
