"""Downsampling of long per-step series for plotting, keeping every spike visible.

A series longer than ``limit`` points is cut into ``limit`` buckets of equal step width;
each bucket keeps its minimum, maximum and mean and the step range it covers. Drawn as
a min..max envelope around the mean, a one-step spike stays as tall as it was (a plain
stride or a mean per bucket would hide it), and thousands of noisy steps become a band
with a readable line through it instead of a solid block of overlapping segments. This
is the min/max part of M4 (Jugel et al. 2014, "M4: a visualization-oriented time series
data aggregation", VLDB 7(10)), with the mean in place of first / last.

Non-finite values (nan, inf) are not averaged: a bucket with no finite value is a gap,
and how many non-finite values each bucket held is kept (``nonfinite``) so the chart can
say where they were instead of dropping them silently.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

LIMIT = 1000  # points per series before bucketing (a chart is rarely wider than ~1000 px)


@dataclass(frozen=True)
class Envelope:
    """Per bucket: the first and last step it covers, min, max, mean of its finite values
    (nan where it had none) and how many non-finite values it held."""

    start: np.ndarray
    stop: np.ndarray
    low: np.ndarray
    high: np.ndarray
    mean: np.ndarray
    nonfinite: np.ndarray


def envelope(steps: np.ndarray, values: np.ndarray, buckets: int) -> Envelope:
    """Bucket ``values`` (sorted by ``steps``) into ``buckets`` equal step ranges; empty
    buckets are dropped."""
    steps = np.asarray(steps, dtype=float)
    values = np.asarray(values, dtype=float)
    first, last = steps.min(), steps.max()
    width = max((last - first) / buckets, 1e-12)
    index = np.minimum(((steps - first) / width).astype(np.int64), buckets - 1)
    used, inverse = np.unique(index, return_inverse=True)
    finite = np.isfinite(values)
    count = np.bincount(inverse, weights=finite, minlength=len(used))
    total = np.bincount(inverse, weights=np.where(finite, values, 0.0), minlength=len(used))
    low = np.full(len(used), np.inf)
    high = np.full(len(used), -np.inf)
    np.minimum.at(low, inverse[finite], values[finite])
    np.maximum.at(high, inverse[finite], values[finite])
    empty = count == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(empty, np.nan, total / np.where(empty, 1, count))
    start = np.full(len(used), np.inf)
    stop = np.full(len(used), -np.inf)
    np.minimum.at(start, inverse, steps)
    np.maximum.at(stop, inverse, steps)
    low[empty], high[empty] = np.nan, np.nan
    nonfinite = np.bincount(inverse, weights=~finite, minlength=len(used)).astype(np.int64)
    return Envelope(start, stop, low, high, mean, nonfinite)


def needs_bucketing(count: int, limit: int = LIMIT) -> bool:
    return count > limit


def column_max(
    steps: np.ndarray, grid: np.ndarray, buckets: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A rows x steps grid (heatmaps) cut into ``buckets`` equal step ranges, keeping per row
    the max of each bucket's finite values (nan where none): (first step, last step, grid)."""
    steps = np.asarray(steps, dtype=float)
    grid = np.where(np.isfinite(grid), grid, np.nan)
    width = max((steps[-1] - steps[0]) / buckets, 1e-12)
    index = np.minimum(((steps - steps[0]) / width).astype(np.int64), buckets - 1)
    used = np.unique(index)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-nan bucket is nan, as wanted
        maxed = np.stack([np.nanmax(grid[:, index == b], axis=1) for b in used], axis=1)
    starts = np.array([steps[index == b][0] for b in used])
    stops = np.array([steps[index == b][-1] for b in used])
    return starts, stops, maxed
