"""The console a report prints to: ``--width`` when given, else the terminal's width
(rich reads $COLUMNS, and uses 80 when the output is not a terminal)."""

from __future__ import annotations

from rich.console import Console

WIDTH_HELP = "Columns to fit (default: the terminal's; 80 when piped)."


def console(width: int | None, no_color: bool) -> Console:
    return Console(width=width, no_color=no_color, highlight=False)
