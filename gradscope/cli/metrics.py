"""``gradscope metrics RUN``: the tidy metrics table as JSON, CSV or Parquet."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from gradscope.analysis.run import analyze_run
from gradscope.analysis.types import FAMILIES
from gradscope.cli.paths import is_terminal, output_file
from gradscope.errors import GradscopeError
from gradscope.report.export import MetricsFormat, select_family, state_lines, write_metrics
from gradscope.store.reader import open_run

Family = Enum("Family", {name: name for name in FAMILIES}, type=str)  # type: ignore[misc]


def metrics(
    run: Annotated[Path, typer.Argument(help="Run directory written by gradscope record.")],
    family: Annotated[Family | None, typer.Option("--family", "-f", help="Only this family.")] = None,
    format: Annotated[MetricsFormat, typer.Option("--format", help="Output format.")] = MetricsFormat.json,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write here (- is stdout).")] = None,
) -> None:
    """Write the tidy metrics table (run, step, family, name, scope, key, value).

    A family with no data or whose analysis failed has no rows; one line per such
    family on stderr says which and why.

    Example: gradscope metrics runs/mlp --family noise | jq '.[] | select(.name == "b_simple")'
    """
    if out is not None and str(out) == "-":
        out = None  # the usual spelling of stdout
    if out is not None:
        output_file(out, "--out", runs=(run,))
    terminal = sys.stdout.isatty() if out is None else is_terminal(out)
    if format is MetricsFormat.parquet and terminal:
        raise GradscopeError("--format parquet is binary: give --out FILE or redirect stdout to a file")
    name = None if family is None else Family(family).value
    analysis = analyze_run(open_run(run), progress=True)
    write_metrics(select_family(analysis.metrics, name), format, out)
    for line in state_lines(analysis, name):
        typer.echo(f"gradscope metrics: {line}", err=True)


def register(app: typer.Typer) -> None:
    app.command()(metrics)
