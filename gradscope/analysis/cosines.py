r"""Cosines without an epsilon, and signal cosines that leave out each sample's own terms.

``cosine``: dot / (|a| |b|) when |a| |b| is positive and finite, else NaN. A fixed floor
(max(|a||b|, 1e-12)) shrinks a cosine toward 0 once |a||b| falls below it (norms ~1e-6,
a vanishing layer); NaN says instead that the direction of a zero gradient is undefined.
The norms multiply as sqrt(|a|^2) sqrt(|b|^2), so |a|^2 |b|^2 never underflows first.

``signal_cosine``: the cosine of two population mean gradients mu_A, mu_B estimated from
n_A and n_B per-sample gradients. The plug-in cosine of the group sums G_A = sum_{i in A} g_i
shrinks toward 0 with per-sample noise, because |G_A|^2 = sum_i |g_i|^2 + sum_{i != j} <g_i, g_j>
holds n_A tr Sigma of noise. Without the i = j terms (issue 14, item 3):

.. math::
    \widehat{\langle\mu_A,\mu_B\rangle} = \frac{\langle G_A, G_B\rangle}{n_A n_B},\qquad
    \widehat{\|\mu_A\|^2} = \frac{\|G_A\|^2 - \sum_{i\in A}\|g_i\|^2}{n_A (n_A - 1)}

each unbiased for i.i.d. samples within a group (the same U-statistic as McCandlish et
al. 2018's |G|^2 estimator, gradscope.analysis.noise). Their ratio is not: the estimate
can leave [-1, 1] when noise dominates and is clipped to it; it is NaN when a group has
fewer than 2 samples or its signal estimate is not positive (noise swamps the signal).
"""

from __future__ import annotations

import numpy as np


def cosine(dot: np.ndarray, norm2_a: np.ndarray, norm2_b: np.ndarray) -> np.ndarray:
    """dot / (|a| |b|) elementwise; NaN where |a| |b| is 0 or not finite.

    >>> cosine(np.array([-2.0, 1.0]), np.array([1.0, 0.0]), np.array([4.0, 1.0])).tolist()
    [-1.0, nan]
    >>> float(cosine(np.array(-1e-16), np.array(1e-16), np.array(1e-16)).round(12))  # norms 1e-8
    -1.0
    """
    dot = np.asarray(dot, dtype=np.float64)
    a = np.sqrt(np.clip(np.asarray(norm2_a, dtype=np.float64), 0.0, None))
    b = np.sqrt(np.clip(np.asarray(norm2_b, dtype=np.float64), 0.0, None))
    product = a * b
    good = (product > 0) & np.isfinite(product)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(good, dot / np.where(good, product, 1.0), np.nan)


def signal_cosine(
    cross: np.ndarray,
    within_a: np.ndarray,
    within_b: np.ndarray,
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> np.ndarray:
    """Signal cosine of two groups (module docstring), elementwise.

    ``cross`` = <G_A, G_B> (summed over micro-batches when pooled); ``within_a`` =
    |G_A|^2 - sum_{i in A} |g_i|^2 (the off-diagonal sum of A's Gram block), likewise
    ``within_b``; ``pairs`` = (n_A n_B, n_A (n_A - 1), n_B (n_B - 1)), the numbers of
    sample pairs each sum holds (summed likewise).

    >>> float(signal_cosine(np.array(4.0), np.array(2.0), np.array(2.0), (4, 2, 2)))
    1.0
    """
    pairs_ab, pairs_a, pairs_b = (np.asarray(p, dtype=np.float64) for p in pairs)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_a = np.where(pairs_a > 0, np.asarray(within_a, dtype=np.float64) / pairs_a, np.nan)
        mean_b = np.where(pairs_b > 0, np.asarray(within_b, dtype=np.float64) / pairs_b, np.nan)
        value = cosine(np.asarray(cross, dtype=np.float64) / pairs_ab, mean_a, mean_b)
    positive = (mean_a > 0) & (mean_b > 0)
    return np.where(positive, np.clip(value, -1.0, 1.0), np.nan)
