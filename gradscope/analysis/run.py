"""Read the tables a run has (only the columns the analysis uses) and analyse them.

Tables are streamed in record batches so a progress bar can follow large runs; the
samples table, by far the largest, is reduced as it streams (gradscope.analysis.samples)
so its memory stays bounded. A run that lacks a table (a minimal profile has no
``samples``, most runs have no ``tasks``) simply hands the engine fewer tables.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pandas as pd
import pyarrow as pa
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gradscope.analysis.engine import Analysis, analyze_tables, sample_options
from gradscope.analysis.ranks import merged_batches, ranks_of
from gradscope.analysis.samples import SampleReducer, SampleSummary
from gradscope.store.reader import Run
from gradscope.store.schema import TABLES


# The columns analysis/ reads from each table (a projection: the reader skips the rest).
# Contract columns another change adds to the schema (index, update_sketch) are read once
# the schema has them.
def _known(table: str, *names: str) -> tuple[str, ...]:
    return tuple(name for name in names if name in TABLES[table].names)


ANALYSIS_COLUMNS: dict[str, tuple[str, ...]] = {
    "steps": (
        "step", "rank", "loss", "grad_norm", "grad_norm_preclip", "batch_size", "skipped", "recorded",
        "optimizer", "hparams", "per_sample_scale",
    ),
    "layers": _known(
        "layers", "step", "rank", "layer", "param", "grad_norm", "weight_norm", "update_norm",
        "init_distance", "nonfinite", "sum_norm2", "local_norm2", "update_sketch",
    ),
    "samples": _known(
        "samples", "step", "rank", "micro", "sample", "layer", "norm2", "weight_dot", "loss", "index",
        "norm2_w", "weight_dot_w", "group", "sketch",
    ),
    "gram": TABLES["gram"].names,
    "tasks": TABLES["tasks"].names,
    "task_samples": TABLES["task_samples"].names,
    "probes": TABLES["probes"].names,
}
BATCH_ROWS = 65_536


def _batches(run: Run, name: str, multi_rank: bool) -> tuple[int, Iterator[pa.RecordBatch | pa.Table]]:
    """(row count, record batches) of a table; SAMPLES of every rank of a multi-rank run,
    merged in step order (gradscope.analysis.ranks), else of the lowest rank."""
    if name != "samples":
        return run.count(name), run.record_batches(name, ANALYSIS_COLUMNS[name], BATCH_ROWS)
    ranks = run.ranks(name) if multi_rank else run.ranks(name)[:1]
    streams = [run.record_batches(name, ANALYSIS_COLUMNS[name], BATCH_ROWS, r) for r in ranks]
    total = sum(run.count(name, r) for r in ranks)
    return total, streams[0] if len(streams) == 1 else merged_batches(streams)


def read_tables(run: Run, progress: bool = False) -> tuple[dict[str, pd.DataFrame], SampleSummary | None]:
    """Every table the run has but SAMPLES, projected to ANALYSIS_COLUMNS (absent tables
    left out), and SAMPLES (of every rank of a multi-rank run, merged in step order by
    gradscope.analysis.ranks; else of the lowest rank) reduced batch by batch to a
    SampleSummary (None without SAMPLES), never held whole."""
    present = [name for name in ANALYSIS_COLUMNS if run.has(name)]
    show = progress and sys.stderr.isatty()
    columns = [TextColumn("reading {task.description:<12}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("rows"), TimeElapsedColumn()]
    tables: dict[str, pd.DataFrame] = {}
    summary = None
    with Progress(*columns, console=Console(stderr=True), transient=True, disable=not show) as bar:
        for name in present:
            total, batches = _batches(run, name, multi_rank=len(ranks_of(tables.get("steps"))) > 1)
            task = bar.add_task(name, total=total)
            if name == "samples":
                reducer = SampleReducer(**sample_options(tables.get("layers"), run.meta))
                for batch in batches:
                    reducer.add(batch)
                    bar.advance(task, batch.num_rows)
                summary = reducer.finish()
                continue
            frames = []
            for batch in batches:
                frames.append(batch.to_pandas())
                bar.advance(task, batch.num_rows)
            empty = [run.table(name, ANALYSIS_COLUMNS[name])]
            tables[name] = pd.concat(frames or empty, ignore_index=True)
    return tables, summary


def analyze_run(run: Run, progress: bool = False, raise_errors: bool | None = None) -> Analysis:
    """Read what the run recorded and compute every metric family with its verdict.

    ``progress`` draws a bar on stderr while tables are read, only when stderr is a
    terminal (pipes and CI logs stay clean). ``raise_errors``: see ``analyze_tables``.
    """
    tables, summary = read_tables(run, progress)
    return analyze_tables(tables, run=run.name, meta=run.meta, samples=summary, raise_errors=raise_errors)
