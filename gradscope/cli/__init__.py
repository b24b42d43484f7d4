"""The ``gradscope`` command: one small module per command, composed here."""

from __future__ import annotations

import sys

import typer

from gradscope.cli import check, compare, demo, metrics, record, report
from gradscope.errors import GradscopeError

app = typer.Typer(
    name="gradscope",
    help="Training-dynamics diagnostics for PyTorch, from the gradients themselves.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
for module in (record, report, metrics, check, compare, demo):
    module.register(app)


def main() -> None:
    """Console entry point: our own errors become one line on stderr and exit code 2.

    Usage errors are typer's (exit 2); typer.Exit carries each command's exit code.
    """
    try:
        app()
    except GradscopeError as err:
        print(f"gradscope: error: {err}", file=sys.stderr)
        sys.exit(2)
