"""The tidy metrics table as JSON records, CSV or Parquet, for pipes and notebooks.

Columns: run, step, family, name, scope, key, value (gradscope/analysis/types.py);
step -1 holds whole-run values. JSON is one array of records with NaN and infinities
written as null, so ``jq`` and ``duckdb`` read it as is.
"""

from __future__ import annotations

import io
import sys
from enum import Enum
from pathlib import Path
from typing import BinaryIO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gradscope.analysis.engine import Analysis
from gradscope.analysis.types import FAMILIES, METRIC_COLUMNS
from gradscope.errors import GradscopeError


class MetricsFormat(str, Enum):
    json = "json"
    csv = "csv"
    parquet = "parquet"


def select_family(metrics: pd.DataFrame, family: str | None) -> pd.DataFrame:
    """The rows of one family (all when None); an unknown family is bad input."""
    if family is None:
        return metrics
    if family not in FAMILIES:
        raise GradscopeError(f"unknown metric family {family!r}; choose one of {', '.join(FAMILIES)}")
    return metrics[metrics["family"] == family]


def state_lines(analysis: Analysis, family: str | None = None) -> list[str]:
    """One line per family (all, or ``family``) without a verdict: no data, too little data
    for its rule, or an analysis that failed. A family whose metric rows were written but
    whose verdict could not be judged (alignment's GWA rows with a single epoch) says so:
    "no data" would contradict the rows in the output."""
    counts = analysis.metrics["family"].value_counts() if len(analysis.metrics) else {}
    lines = []
    for v in analysis.verdicts:
        if v.judged or family not in (None, v.family):
            continue
        rows = int(counts.get(v.family, 0))
        why = v.summary.removeprefix("no data: ")
        lines.append(f"{v.family}: {rows} metric rows written, no verdict: {why}" if rows
                     else f"{v.family}: {v.summary}")
    return lines


def encode(metrics: pd.DataFrame, fmt: MetricsFormat) -> bytes:
    """The table in ``fmt`` as bytes (UTF-8 for the text formats)."""
    frame = metrics[list(METRIC_COLUMNS)].reset_index(drop=True)
    if fmt is MetricsFormat.json:
        return frame.to_json(orient="records", double_precision=15).encode() + b"\n"
    if fmt is MetricsFormat.csv:
        return frame.to_csv(index=False).encode()
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer)
    return buffer.getvalue()


def write_metrics(
    metrics: pd.DataFrame, fmt: MetricsFormat, out: Path | None = None, stdout: BinaryIO | None = None
) -> None:
    """Write to ``out``, or to stdout; Parquet to stdout only when it is not a terminal."""
    stream = stdout if stdout is not None else sys.stdout.buffer
    if out is None and fmt is MetricsFormat.parquet and stream.isatty():
        raise GradscopeError("parquet is binary: pass --out FILE or redirect stdout to a file or pipe")
    data = encode(metrics, fmt)
    if out is None:
        stream.write(data)
        stream.flush()
        return
    try:
        out.write_bytes(data)
    except OSError as err:
        raise GradscopeError(f"cannot write metrics to {out}: {err.strerror}") from None
