"""Pure analysis of a run directory: tables in, metric tables and verdicts out (no torch).

``analyze(run_dir)`` is the entry point; ``gradscope.analysis.engine.analyze_tables`` does
the same from DataFrames already in memory.
"""

from __future__ import annotations

from pathlib import Path

from gradscope.analysis.engine import Analysis
from gradscope.analysis.run import analyze_run
from gradscope.store.reader import open_run

__all__ = ["Analysis", "analyze"]


def analyze(run_dir: str | Path, *, progress: bool = False, raise_errors: bool | None = None) -> Analysis:
    """The metrics table and one verdict per family for the run in ``run_dir``.

    Tables are streamed shard by shard and the per-sample table is reduced as it is read,
    so memory follows steps x layers, not samples. ``progress`` draws a bar on stderr when
    it is a terminal. Raises ``gradscope.errors.GradscopeError`` (one line) for a path that
    is not a readable run. A family whose analysis raises gets a "failed" verdict, unless
    ``raise_errors`` (default: environment GRADSCOPE_RAISE=1), when the error propagates.
    """
    return analyze_run(open_run(run_dir), progress=progress, raise_errors=raise_errors)
