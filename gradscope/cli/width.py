"""The console a report prints to: ``--width`` when given, else the terminal's width
(rich reads $COLUMNS, and uses 80 when the output is not a terminal)."""

from __future__ import annotations

from rich.console import Console

MIN_WIDTH = 60  # the narrowest layout that keeps every number whole (tests/report/test_layout_golden.py)
WIDTH_HELP = f"Columns to fit, at least {MIN_WIDTH} (default: the terminal's; 80 when piped)."


def console(width: int | None, no_color: bool) -> Console:
    """A narrower terminal than MIN_WIDTH gets MIN_WIDTH columns (its lines wrap, numbers stay whole)."""
    made = Console(width=width, no_color=no_color, highlight=False)
    if made.width < MIN_WIDTH:
        made = Console(width=MIN_WIDTH, no_color=no_color, highlight=False)
    return made
