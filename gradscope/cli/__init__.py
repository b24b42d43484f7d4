"""The ``gradscope`` command: one small module per command, composed here.

Commands are imported only when used: ``gradscope record`` must start the user's
training without first loading the report stack (pandas analysis, matplotlib).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer

from gradscope.errors import GradscopeError

COMMANDS = ("record", "report", "metrics", "check", "compare", "demo")


def _root() -> None:
    """Training-dynamics diagnostics for PyTorch, from the gradients themselves."""


def build_app(commands: tuple[str, ...] = COMMANDS) -> typer.Typer:
    app = typer.Typer(
        name="gradscope",
        help="Training-dynamics diagnostics for PyTorch, from the gradients themselves.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_show_locals=False,
    )
    app.callback()(_root)  # keeps subcommands even when only one is registered
    for command in commands:
        importlib.import_module(f"gradscope.cli.{command}").register(app)
    return app


def __getattr__(name: str) -> Any:
    if name == "app":  # the full app, for `from gradscope.cli import app` (tests, docs)
        return build_app()
    raise AttributeError(f"module 'gradscope.cli' has no attribute {name!r}")


def main() -> None:
    """Console entry point: our own errors become one line on stderr and exit code 2.

    Usage errors are typer's (exit 2); typer.Exit carries each command's exit code.
    """
    invoked = sys.argv[1] if len(sys.argv) > 1 else ""
    app = build_app((invoked,) if invoked in COMMANDS else COMMANDS)
    try:
        app()
    except GradscopeError as err:
        print(f"gradscope: error: {err}", file=sys.stderr)
        sys.exit(2)
