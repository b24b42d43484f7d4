"""Read the tables a run has (only the columns the analysis uses) and analyse them.

Tables are streamed in record batches so a progress bar can follow large runs; a run
that lacks a table (a minimal profile has no ``samples``, most runs have no ``tasks``)
simply hands the engine fewer tables.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gradscope.analysis import sketches
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
    """Every table the run has, projected to ANALYSIS_COLUMNS, streamed in record batches;
    absent tables are left out. The per-sample sketches are reduced batch by batch to
    per-(step, layer) moments (table ``sketch_moments``) and never held whole."""
    present = [name for name in ANALYSIS_COLUMNS if run.has(name)]
    show = progress and sys.stderr.isatty()
    columns = [TextColumn("reading {task.description:<12}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("rows"), TimeElapsedColumn()]
    tables: dict[str, pd.DataFrame] = {}
    with Progress(*columns, console=Console(stderr=True), transient=True, disable=not show) as bar:
        for name in present:
            task = bar.add_task(name, total=run.count(name))
            frames, moments = [], []
            for batch in run.record_batches(name, ANALYSIS_COLUMNS[name], batch_rows=BATCH_ROWS):
                if name == "samples":
                    batch, moment = _split_sketch(batch)
                    moments.append(moment)
                frames.append(batch.to_pandas())
                bar.advance(task, batch.num_rows)
            empty = [run.table(name, ANALYSIS_COLUMNS[name])]
            tables[name] = pd.concat(frames or empty, ignore_index=True)
            if name == "samples":
                tables["sketch_moments"] = sketches.combine(moments)
    return tables


def _split_sketch(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, pd.DataFrame]:
    """The batch without its sketch column, and that column's (step, layer) moments."""
    index = batch.schema.get_field_index("sketch")
    column = batch.column(index)
    rest = batch.remove_column(index)
    lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)
    keep = lengths > 0
    if not keep.any():
        return rest, sketches.moments(np.array([]), np.array([]), np.zeros((0, 0)))
    width = int(np.bincount(lengths[keep]).argmax())
    keep &= lengths == width
    values = column.filter(pa.array(keep)).flatten().to_numpy(zero_copy_only=False)
    steps = rest.column("step").to_numpy()[keep]
    layers = rest.column("layer").to_numpy(zero_copy_only=False)[keep]
    return rest, sketches.moments(steps, layers, values.reshape(-1, width))


def load_analysis(run: Run, progress: bool = False) -> Analysis:
    """Read what the run recorded and compute every metric family with its verdict.

    ``progress`` draws a bar on stderr while tables are read, only when stderr is a
    terminal (pipes and CI logs stay clean).
    """
    tables = read_tables(run, progress)
    return analyze(tables, run=run.name, meta=run.meta)
