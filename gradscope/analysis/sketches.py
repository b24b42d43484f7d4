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


def from_samples(samples: pd.DataFrame) -> pd.DataFrame:
    """Moments from a SAMPLES frame with a ``sketch`` column; rows whose sketch length
    differs from the most common one are left out."""
    lengths = samples["sketch"].map(len, na_action="ignore").fillna(0).to_numpy(int)
    if not (lengths > 0).any():
        return pd.DataFrame(columns=list(MOMENT_COLUMNS))
    width = int(np.bincount(lengths[lengths > 0]).argmax())
    usable = samples[lengths == width]
    matrix = np.concatenate(usable["sketch"].to_numpy()).reshape(-1, width)
    return moments(usable["step"].to_numpy(), usable["layer"].to_numpy(), matrix)


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
