"""How verdicts name steps and keys: lists that are cut say so, runs of steps are ranges."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

SHOWN = 8  # items named before "... and N more"


def ranges(steps: Iterable[int]) -> list[tuple[int, int]]:
    """Consecutive runs of the sorted distinct ``steps`` as (first, last).

    >>> ranges([5, 1, 2, 3, 9])
    [(1, 3), (5, 5), (9, 9)]
    """
    runs: list[tuple[int, int]] = []
    for step in sorted(set(int(s) for s in steps)):
        if runs and step == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], step)
        else:
            runs.append((step, step))
    return runs


def step_list(steps: Sequence[int], total: int | None = None) -> str:
    """The steps as text that never hides a cut: runs as "a-b", at most SHOWN runs then
    "... and N more steps", the count in brackets when ranges shorten it, and "all N
    steps" when ``steps`` are every one of the run's ``total`` recorded steps.

    >>> step_list(range(240), total=240)
    'all 240 steps (0-239)'
    >>> step_list([3, 4, 5, 9])
    'steps 3-5, 9 (4)'
    >>> step_list(list(range(0, 40, 2)))
    'steps 0, 2, 4, 6, 8, 10, 12, 14 ... and 12 more (20)'
    """
    distinct = sorted(set(int(s) for s in steps))
    if not distinct:
        return "no steps"
    runs = ranges(distinct)
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:SHOWN]]
    text = ", ".join(parts)
    if total is not None and len(distinct) == total and len(runs) == 1:
        return f"all {total} steps ({text})"
    if len(distinct) == 1:
        return f"step {text}"
    if len(runs) > SHOWN:
        text += f" ... and {len(runs) - SHOWN} more"
    shortened = len(runs) > SHOWN or any(a != b for a, b in runs)
    return f"steps {text}" + (f" ({len(distinct)})" if shortened else "")


def key_list(keys: Sequence[str], shown: int = SHOWN) -> str:
    """Names joined by ", ", the rest counted: "a, b ... and 3 more"."""
    head = ", ".join(str(k) for k in keys[:shown])
    return head + (f" ... and {len(keys) - shown} more" if len(keys) > shown else "")
