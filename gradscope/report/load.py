"""Read the tables a run has (only the columns the analysis uses) and analyse them.

Tables are streamed in record batches so a progress bar can follow large runs; a run
that lacks a table (a minimal profile has no ``samples``, most runs have no ``tasks``)
simply hands the engine fewer tables.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gradscope.analysis.engine import Analysis, analyze
from gradscope.store.reader import Run
from gradscope.store.schema import TABLES

# The columns analysis/ reads from each table (a projection: the reader skips the rest).
ANALYSIS_COLUMNS: dict[str, tuple[str, ...]] = {
    "steps": ("step", "rank", "loss", "grad_norm", "batch_size", "skipped", "recorded"),
    "layers": (
        "step", "rank", "layer", "grad_norm", "weight_norm", "update_norm",
        "init_distance", "nonfinite", "sum_norm2",
    ),
    "samples": ("step", "rank", "micro", "sample", "layer", "norm2", "weight_dot", "group", "sketch"),
    "gram": TABLES["gram"].names,
    "tasks": TABLES["tasks"].names,
    "task_samples": TABLES["task_samples"].names,
}
BATCH_ROWS = 262_144


def read_tables(run: Run, progress: bool = False) -> dict[str, pd.DataFrame]:
    """Every table the run has, projected to ANALYSIS_COLUMNS; absent tables are left out."""
    present = [name for name in ANALYSIS_COLUMNS if run.has(name)]
    if not (progress and sys.stderr.isatty()):
        return {name: run.table(name, ANALYSIS_COLUMNS[name]) for name in present}
    columns = [TextColumn("reading {task.description:<12}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("rows"), TimeElapsedColumn()]
    tables = {}
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        for name in present:
            task = bar.add_task(name, total=run.count(name))
            parts = list(_counted(run, name, lambda rows, t=task: bar.advance(t, rows)))
            if not parts:
                parts = [run.table(name, ANALYSIS_COLUMNS[name])]
            tables[name] = pd.concat(parts, ignore_index=True)
    return tables


def _counted(run: Run, name: str, advance: Callable[[int], object]) -> Iterator[pd.DataFrame]:
    for frame in run.batches(name, ANALYSIS_COLUMNS[name], batch_rows=BATCH_ROWS):
        advance(len(frame))
        yield frame


def load_analysis(run: Run, progress: bool = False) -> Analysis:
    """Read what the run recorded and compute every metric family with its verdict.

    ``progress`` draws a bar on stderr while tables are read, only when stderr is a
    terminal (pipes and CI logs stay clean).
    """
    tables = read_tables(run, progress)
    return analyze(tables, run=run.name, meta=run.meta)
