"""Unicode sparklines for the terminal report."""

from __future__ import annotations

import math
from collections.abc import Sequence

_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int = 60) -> str:
    """Down-sample ``values`` to ``width`` bins (bin means) and draw them; NaN is a space.

    >>> sparkline([0, 1, 2, 3], width=4)
    '▁▃▆█'
    """
    if not values:
        return ""
    bins = _bin_means(values, width)
    finite = [v for v in bins if math.isfinite(v)]
    if not finite:
        return " " * len(bins)
    low, high = min(finite), max(finite)
    span = high - low or 1.0
    return "".join(
        " " if not math.isfinite(v) else _BARS[min(7, int((v - low) / span * 7 + 0.5))]
        for v in bins
    )


def _bin_means(values: Sequence[float], width: int) -> list[float]:
    if len(values) <= width:
        return [float(v) for v in values]
    bins = []
    for index in range(width):
        start = index * len(values) // width
        stop = (index + 1) * len(values) // width
        chunk = [float(v) for v in values[start:stop] if math.isfinite(float(v))]
        bins.append(sum(chunk) / len(chunk) if chunk else math.nan)
    return bins
