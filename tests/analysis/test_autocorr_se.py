"""coherence.grad_autocorr_se against the spread of sketch cosines over many projections."""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradscope.analysis import oscillation


def _moments(rng: np.random.Generator, a: np.ndarray, b: np.ndarray, width: int) -> pd.DataFrame:
    """Sketch sums of two steps' gradients for two layers ("0" holds a, b; "2" the same),
    one fresh Gaussian projection per layer, as the recorder's seeded sketches are."""
    rows = []
    for layer in ("0", "2"):
        projection = rng.normal(size=(width, a.size))
        rows += [(0, layer, projection @ a), (1, layer, projection @ b)]
    return pd.DataFrame(rows, columns=["step", "layer", "sum"])


def test_se_matches_the_spread_of_the_estimate_at_sketch_size_16() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=400)
    b = -0.414 * a / np.linalg.norm(a) + np.sqrt(1 - 0.414**2) * rng.normal(size=400) / 20
    exact = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    values, ses = {"layer": [], "model": []}, {"layer": [], "model": []}
    for _ in range(400):
        rows = oscillation.grad_autocorr_rows(_moments(rng, a, b, 16))
        for scope in ("layer", "model"):
            chosen = rows[(rows["scope"] == scope) & (rows["key"].isin(["", "0"]))]
            values[scope].append(chosen.loc[chosen["name"] == "grad_autocorr", "value"].iloc[0])
            ses[scope].append(chosen.loc[chosen["name"] == "grad_autocorr_se", "value"].iloc[0])
    for scope, dims in (("layer", 16), ("model", 32)):
        spread = np.std(values[scope])
        assert abs(np.mean(values[scope]) - exact) < 0.05
        assert abs(np.median(ses[scope]) / spread - 1) < 0.2, (scope, np.median(ses[scope]), spread)
        assert abs(spread - (1 - exact**2) / np.sqrt(dims)) < 0.25 * spread
