"""``gradscope check RUN``: CI gates on a run's metrics and verdicts.

Exit codes: 0 every rule passes (or is skipped, with its reason printed); 1 a rule
fails, which includes every rule on a run with no recorded step and every rule on a
family whose analysis failed; 2 bad input (a malformed rule or config, an unreadable run,
or a rule whose metric the run lacks, unless the rule is optional or --allow-missing is
given). The semantics of each verdict state: gradscope/report/check.py.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gradscope.analysis.run import analyze_run
from gradscope.cli.paths import config_file
from gradscope.errors import GradscopeError
from gradscope.report.check import (
    exit_code,
    gather_rules,
    missing_message,
    outcome_table,
    run_checks,
    write_json,
)
from gradscope.store.reader import open_run


class CheckFormat(str, Enum):
    table = "table"
    json = "json"


def check(
    run: Annotated[Path, typer.Argument(help="Run directory written by gradscope record.")],
    config: Annotated[
        list[Path] | None,
        typer.Option("--config", "-c", metavar="FILE|default|strict",
                     help="TOML file of [[rule]] entries, or a shipped config by name (repeatable)."),
    ] = None,
    rule: Annotated[
        list[str] | None,
        typer.Option("--rule", "-r", metavar="RULE", help="A rule, e.g. 'noise.b_simple.last < 4096'."),
    ] = None,
    allow_missing: Annotated[
        bool, typer.Option("--allow-missing", help="Skip rules whose metric the run lacks.")
    ] = False,
    format: Annotated[CheckFormat, typer.Option("--format", help="Output format.")] = CheckFormat.table,
    no_color: Annotated[bool, typer.Option("--no-color", help="Plain text output.")] = False,
) -> None:
    """Exit 1 when a rule fails, printing each rule, its value and its threshold.

    Example: gradscope check runs/mlp --config default --rule 'verdict.* != alert'
    """
    rules = gather_rules([config_file(path) for path in config or []], rule or [])
    opened = open_run(run)
    outcomes = run_checks(rules, analyze_run(opened), allow_missing)
    if format is CheckFormat.json:
        write_json(outcomes, opened.name)
    else:
        Console(no_color=no_color, highlight=False).print(outcome_table(outcomes, opened.name))
    code = exit_code(outcomes)
    if code == 2:
        raise GradscopeError(missing_message(outcomes))
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command()(check)
