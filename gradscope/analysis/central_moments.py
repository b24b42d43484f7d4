r"""Count, mean and central sums up to the fourth order, mergeable across batches.

For values x_1..x_n with mean \bar x, M_k = \sum_i (x_i - \bar x)^k. Two sets merge
exactly (Pébay 2008, "Formulas for robust, one-pass parallel computation of covariances
and arbitrary-order statistical moments", Sandia SAND2008-6212, eq. 3.1 and 3.2), with
n = n_a + n_b and \delta = \bar x_b - \bar x_a:

.. math::
    M_2 = M_{2a} + M_{2b} + \delta^2 n_a n_b / n

    M_3 = M_{3a} + M_{3b} + \delta^3 n_a n_b (n_a - n_b) / n^2
          + 3 \delta (n_a M_{2b} - n_b M_{2a}) / n

    M_4 = M_{4a} + M_{4b} + \delta^4 n_a n_b (n_a^2 - n_a n_b + n_b^2) / n^3
          + 6 \delta^2 (n_a^2 M_{2b} + n_b^2 M_{2a}) / n^2 + 4 \delta (n_a M_{3b} - n_b M_{3a}) / n

Unlike raw power sums, these stay exact when the mean is large against the spread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CentralMoments:
    """n, mean and M2..M4 of a set of values (all zero for the empty set)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    m3: float = 0.0
    m4: float = 0.0

    @classmethod
    def of(cls, values: np.ndarray) -> CentralMoments:
        values = np.asarray(values, dtype=np.float64)
        if not len(values):
            return cls()
        mean = float(values.mean())
        centred = values - mean
        squares = centred * centred
        return cls(len(values), mean, float(squares.sum()), float((squares * centred).sum()),
                   float((squares * squares).sum()))

    def merge(self, other: CentralMoments) -> CentralMoments:
        if not other.n:
            return self
        if not self.n:
            return other
        na, nb = self.n, other.n
        n = na + nb
        delta = other.mean - self.mean
        m2 = self.m2 + other.m2 + delta**2 * na * nb / n
        m3 = (self.m3 + other.m3 + delta**3 * na * nb * (na - nb) / n**2
              + 3 * delta * (na * other.m2 - nb * self.m2) / n)
        m4 = (self.m4 + other.m4 + delta**4 * na * nb * (na * na - na * nb + nb * nb) / n**3
              + 6 * delta**2 * (na * na * other.m2 + nb * nb * self.m2) / n**2
              + 4 * delta * (na * other.m3 - nb * self.m3) / n)
        return CentralMoments(n, self.mean + delta * nb / n, m2, m3, m4)

    @property
    def excess_kurtosis(self) -> float:
        """Biased Fisher kurtosis n M4 / M2^2 - 3 (scipy.stats.kurtosis defaults); NaN if M2 = 0."""
        if not self.m2 > 0:
            return float("nan")
        return self.n * self.m4 / self.m2**2 - 3.0
