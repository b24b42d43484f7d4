"""``gradscope compare RUN_A RUN_B [RUN...]``: what differed between runs, and what it did.

Exit codes: 0; 1 when a --fail-on rule fails on a run after the first (the baseline);
2 bad input (an unreadable run, a malformed rule, a rule whose metric a run lacks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gradscope.analysis.run import analyze_run
from gradscope.cli.paths import output_file
from gradscope.cli.width import MIN_WIDTH, WIDTH_HELP, console
from gradscope.errors import GradscopeError
from gradscope.report.check import exit_code, gather_rules, missing_message, run_checks
from gradscope.report.compare import labelled
from gradscope.report.compare_view import comparison_renderables, fail_on_table
from gradscope.store.reader import open_run


def compare(
    runs: Annotated[
        list[Path], typer.Argument(help="Two or more run directories; the first is the baseline A.")
    ],
    fail_on: Annotated[
        list[str] | None,
        typer.Option("--fail-on", metavar="RULE",
                     help="Exit 1 when a run after the first breaks RULE (check's grammar; repeatable)."),
    ] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Also write the runs' curves overlaid.")] = None,
    width: Annotated[int | None, typer.Option(min=MIN_WIDTH, max=1000, help=WIDTH_HELP)] = None,
    no_color: Annotated[bool, typer.Option("--no-color", help="Plain text output.")] = False,
) -> None:
    """Settings that differ (command, learning rates, ...), verdicts, metric deltas against
    the first run, per-layer detail.

    Example: gradscope compare runs/base runs/lr-1e-2 --fail-on 'verdict.stability != alert'
    """
    if len(runs) < 2:
        raise GradscopeError("compare needs at least two runs (the first is the baseline)")
    rules = gather_rules([], fail_on) if fail_on else []
    if html is not None:
        output_file(html, "--html", runs=tuple(runs))
    opened = [open_run(run) for run in runs]
    compared = labelled(opened, [analyze_run(run, progress=True) for run in opened])
    checked = [(item.label, run_checks(rules, item.analysis)) for item in compared[1:]] if rules else []
    out = console(width, no_color)
    for renderable in comparison_renderables(compared, out.width):
        out.print(renderable)
    if html is not None:
        from gradscope.report.compare_html import write_compare_html  # matplotlib, only when asked

        write_compare_html(compared, html)
        Console(stderr=True, no_color=no_color).print(f"HTML comparison written to {html}", markup=False)
    if rules:
        out.print(fail_on_table(checked, out.width))
        outcomes = [o for _, results in checked for o in results]
        if exit_code(outcomes) == 2:
            raise GradscopeError(missing_message(outcomes))
        raise typer.Exit(exit_code(outcomes))


def register(app: typer.Typer) -> None:
    app.command()(compare)
