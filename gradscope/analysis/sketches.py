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
SUM_COLUMNS = ("step", "layer", "part", "count", "sum", "own")


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


def sums_by(step: np.ndarray, layer: np.ndarray, part: np.ndarray, values: np.ndarray) -> pd.DataFrame:
    """Sketch sums per (step, layer, part), ``part`` a micro-batch index or a group label.

    A sketch is a linear projection P c_i of the sample's gradient, so ``sum`` (length k)
    is the sketch of the part's gradient sum_{i in part} c_i, and ``own`` = sum_i |P c_i|^2
    the part's diagonal (own-term) sum: what the micro-batch distance, the gradient
    autocorrelation and the signal cosines of groups need without the B x B Gram.
    Inner products of sketches estimate those of the gradients (unbiased, with the
    projection's variance). ``layer`` holds the caller's integer codes.
    """
    if not len(values):
        return pd.DataFrame(columns=list(SUM_COLUMNS))
    keys = np.stack([step, layer, part], axis=1).astype(np.int64)
    distinct, index = np.unique(keys, axis=0, return_inverse=True)
    index = index.ravel()
    order = np.argsort(index, kind="stable")
    starts = np.flatnonzero(np.diff(index[order], prepend=-1))
    return pd.DataFrame({
        "step": distinct[:, 0], "layer": distinct[:, 1], "part": distinct[:, 2],
        "count": np.bincount(index, None, len(distinct)).astype(np.int64),
        "sum": list(np.add.reduceat(values[order], starts, axis=0)),
        "own": np.bincount(index, (values * values).sum(axis=1), len(distinct)),
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
