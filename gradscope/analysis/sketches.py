"""Per-(step, layer) moments of the per-sample sketches, combinable across record batches.

The GSNR estimate needs, per (step, layer) and sketch coordinate j, the count n, the sum
and the sum of squares of s_ij. Those add across batches of rows, so a reader can stream
the samples table and never hold the sketches of a whole run (about 16 floats per
(sample, layer, step)). Variances come from the sums in float64 (single pass): precise
while mean^2 / variance stays below about 1e10, far above any GSNR that matters here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

MOMENT_COLUMNS = ("step", "layer", "count", "sum", "sumsq")


def moments(steps: np.ndarray, layers: np.ndarray, matrix: np.ndarray) -> pd.DataFrame:
    """Moments of ``matrix`` [N, k] rows grouped by (step, layer): one row per group, with
    ``sum`` and ``sumsq`` as length-k arrays."""
    if len(matrix) == 0:
        return pd.DataFrame(columns=list(MOMENT_COLUMNS))
    keys = pd.DataFrame({"step": steps, "layer": layers})
    grouped = keys.groupby(["step", "layer"], sort=True)
    codes, index = grouped.ngroup().to_numpy(), grouped.size().index
    values = matrix.astype(np.float64)
    count = np.bincount(codes, minlength=len(index))
    total = _column_sums(codes, values, len(index))
    squares = _column_sums(codes, values * values, len(index))
    return pd.DataFrame({
        "step": index.get_level_values(0), "layer": index.get_level_values(1), "count": count,
        "sum": list(total), "sumsq": list(squares),
    })


def split(batch: pa.RecordBatch) -> tuple[pa.RecordBatch, pd.DataFrame]:
    """``batch`` without its ``sketch`` column, and that column's (step, layer) moments.
    Rows whose sketch length differs from the most common one are left out."""
    index = batch.schema.get_field_index("sketch")
    column = batch.column(index)
    rest = batch.remove_column(index)
    if not pa.types.is_list(column.type) and not pa.types.is_large_list(column.type):
        return rest, moments(np.array([]), np.array([]), np.zeros((0, 0)))
    lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)
    keep = lengths > 0
    if not keep.any():
        return rest, moments(np.array([]), np.array([]), np.zeros((0, 0)))
    width = int(np.bincount(lengths[keep]).argmax())
    keep &= lengths == width
    values = column.filter(pa.array(keep)).flatten().to_numpy(zero_copy_only=False)
    steps = rest.column("step").to_numpy(zero_copy_only=False)[keep]
    layers = rest.column("layer").to_numpy(zero_copy_only=False)[keep]
    return rest, moments(steps, layers, values.reshape(-1, width).astype(np.float64))


def combine(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Add up moments of the same (step, layer) computed from different batches."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=list(MOMENT_COLUMNS))
    frame = pd.concat(parts, ignore_index=True)
    if not frame.duplicated(["step", "layer"]).any():
        return frame.sort_values(["step", "layer"], ignore_index=True)
    rows = []
    for (step, layer), block in frame.groupby(["step", "layer"], sort=True):
        rows.append((step, layer, int(block["count"].sum()), np.sum(np.stack(block["sum"]), 0),
                     np.sum(np.stack(block["sumsq"]), 0)))
    return pd.DataFrame(rows, columns=list(MOMENT_COLUMNS))


def _column_sums(codes: np.ndarray, values: np.ndarray, groups: int) -> np.ndarray:
    """Column sums of ``values`` [N, k] per group code: [groups, k]."""
    return np.stack([np.bincount(codes, values[:, j], groups) for j in range(values.shape[1])], axis=1)
