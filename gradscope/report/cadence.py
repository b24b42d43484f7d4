"""The recording cadence of a per-step series: ``gradscope record --every N`` computes
per-layer statistics (and what is derived from them, e.g. the global gradient norm) on
every N-th step only, so the metrics table holds nan on the steps between. Those nans
are the cadence, not missing data: charts drop them (instead of drawing gaps or listing
thousands of steps) and rules skip them (``last`` is the last recorded value).

The cadence is read from the data, not from meta.json: the most common distance between
steps that have a value. A nan on that grid (a recorded step without a value) is not a
cadence gap and stays visible.
"""

from __future__ import annotations

import numpy as np


def stride(steps: np.ndarray, values: np.ndarray) -> int:
    """The most common step distance between values that are not nan (1 when unknown)."""
    steps = np.asarray(steps, dtype=np.int64)
    known = np.sort(steps[~np.isnan(np.asarray(values, dtype=float))])
    if known.size < 2:
        return 1
    gaps, counts = np.unique(np.diff(known), return_counts=True)
    best = int(gaps[np.argmax(counts)])
    return max(best, 1)


def gaps(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, int]:
    """(mask of the nan values that fall between recorded steps, the stride)."""
    steps = np.asarray(steps, dtype=np.int64)
    values = np.asarray(values, dtype=float)
    every = stride(steps, values)
    missing = np.isnan(values)
    if every <= 1 or missing.all():
        return np.zeros(len(values), dtype=bool), every
    origin = int(steps[~missing].min())
    return missing & ((steps - origin) % every != 0), every


def recorded(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(steps, values, stride) without the cadence gaps."""
    mask, every = gaps(steps, values)
    return np.asarray(steps)[~mask], np.asarray(values, dtype=float)[~mask], every
