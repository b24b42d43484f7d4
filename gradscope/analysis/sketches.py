"""Per-(step, layer) moments of the per-sample sketches.

The GSNR estimate needs, per (step, layer) and sketch coordinate j, the count n, the sum
and the sum of squares of s_ij. The samples reducer (gradscope.analysis.samples) computes
them step by step as it streams, so the sketches of a whole run (about 16 floats per
(sample, layer, step)) are never held. Variances come from the sums in float64 (single pass): precise
while mean^2 / variance stays below about 1e10, far above any GSNR that matters here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

MOMENT_COLUMNS = ("step", "layer", "count", "sum", "sumsq")


def moments(steps: np.ndarray, layers: np.ndarray, cells: np.ndarray, values: np.ndarray) -> pd.DataFrame:
    """Moments of the ``values`` rows [N, k] grouped by ``cells`` (each row's index into
    the (step, layer) labels ``steps`` and ``layers``): one row per cell present, with
    ``sum`` and ``sumsq`` as length-k arrays."""
    if not len(values):
        return pd.DataFrame(columns=list(MOMENT_COLUMNS))
    order = np.argsort(cells, kind="stable")
    starts = np.flatnonzero(np.diff(cells[order], prepend=-1))
    present = cells[order][starts]
    ordered = values[order]
    return pd.DataFrame({
        "step": steps[present], "layer": layers[present],
        "count": np.diff(np.append(starts, len(cells))),
        "sum": list(np.add.reduceat(ordered, starts, axis=0)),
        "sumsq": list(np.add.reduceat(ordered * ordered, starts, axis=0)),
    })


def split(rows: pa.Table) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """``rows`` without their ``sketch`` column; which rows have a usable sketch (bool
    [N]); those sketches as a float64 matrix. Rows whose sketch length differs from the
    most common one are left out."""
    index = rows.schema.get_field_index("sketch")
    column = rows.column(index)
    rest = rows.remove_column(index)
    none = np.zeros(len(rows), dtype=bool), np.zeros((0, 0))
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
        return (rest, *none)
    lengths = pc.list_value_length(column).fill_null(0).to_numpy()
    keep = lengths > 0
    if not keep.any():
        return (rest, *none)
    width = int(np.bincount(lengths[keep]).argmax())
    keep &= lengths == width
    kept = column if keep.all() else column.filter(pa.array(keep))  # filter copies: skip it when it can
    values = pc.list_flatten(kept).to_numpy().astype(np.float64)
    return rest, keep, values.reshape(-1, width)
