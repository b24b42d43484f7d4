"""The ``gradscope`` command: one small module per command, composed here.

Commands are imported only when used: ``gradscope record`` must start the user's
training without first loading the report stack (pandas analysis, matplotlib).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Annotated, Any

import typer

from gradscope.errors import GradscopeError, os_error_line

COMMANDS = ("record", "report", "metrics", "check", "compare", "demo", "export")


def _version(value: bool) -> None:
    if value:
        from gradscope import __version__

        typer.echo(f"gradscope {__version__}")
        raise typer.Exit(0)


def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Training-dynamics diagnostics for PyTorch, from the gradients themselves."""


def build_app(commands: tuple[str, ...] = COMMANDS) -> typer.Typer:
    app = typer.Typer(
        name="gradscope",
        help="Training-dynamics diagnostics for PyTorch, from the gradients themselves.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_show_locals=False,
        rich_markup_mode=None,  # help text is shown as written: `[[rule]]` stays
        context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every command
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
    """Console entry point: every failure is one line on stderr.

    Exit codes: typer.Exit carries each command's own (check: 1 = a rule failed); 2 for
    bad input (our GradscopeError, an OSError on a path, typer's usage errors); 130 on
    Ctrl-C; 1 with "internal error" for a bug (GRADSCOPE_DEBUG=1 shows its traceback).
    """
    invoked = sys.argv[1] if len(sys.argv) > 1 else ""
    app = build_app((invoked,) if invoked in COMMANDS else COMMANDS)
    try:
        code = app(standalone_mode=False)
    except GradscopeError as err:
        _fail(f"error: {err}", 2)
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        _fail(f"error: {where}{os_error_line(err)}", 2)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as err:  # noqa: BLE001 - a bug: one line, unless asked for the traceback
        _usage_error(err, invoked)
        if os.environ.get("GRADSCOPE_DEBUG"):
            raise
        _fail(f"internal error: {type(err).__name__}: {err} (GRADSCOPE_DEBUG=1 shows the traceback)", 1)
    if isinstance(code, int) and code:
        sys.exit(code)


def _usage_error(err: Exception, invoked: str) -> None:
    """Click's usage errors (unknown option, bad value, missing argument; typer ships its own
    copy of click, hence the match by class name) as one line and exit 2; Abort as 130."""
    names = {cls.__name__ for cls in type(err).__mro__}
    if "Abort" in names:
        _fail("interrupted", 130)
    if "UsageError" not in names:
        return
    ctx = getattr(err, "ctx", None)
    if "NoArgsIsHelpError" in names and ctx is not None:  # bare `gradscope`: the help
        typer.echo(ctx.get_help())
        sys.exit(0)
    command = f"gradscope {invoked} --help" if invoked in COMMANDS else "gradscope --help"
    message = err.format_message().replace("Value error, ", "")
    _fail(f"error: {message} (see {command})", 2)


def _fail(message: str, code: int) -> None:
    line = " ".join(message.split())
    print(f"gradscope: {line[:400]}", file=sys.stderr)
    sys.exit(code)
