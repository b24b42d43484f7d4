r"""The noise scale DDP gives for free: each rank's local gradient against the all-reduced one.

McCandlish et al. 2018, "An Empirical Model of Large-Batch Training", Appendix A.1: for
mean gradients G_B over batches of B i.i.d. samples, E|G_B|^2 = |G|^2 + tr(Sigma)/B. Two
batch sizes B_small < B_big give unbiased estimates

.. math::
    \widehat{\|G\|^2} = \frac{B_{big}\|G_{big}\|^2 - B_{small}\|G_{small}\|^2}{B_{big} - B_{small}},
    \qquad
    \widehat{\operatorname{tr}\Sigma} = \frac{\|G_{small}\|^2 - \|G_{big}\|^2}{1/B_{small} - 1/B_{big}},

and B_simple = tr(Sigma) / |G|^2. Under DDP with W ranks of B samples each, the local
gradient of rank r (``layers.local_norm2``, before the all-reduce) is a batch of B_small = B,
the all-reduced one (``layers.sum_norm2``, the mean of the local ones) a batch of
B_big = W B: |G_small|^2 is the mean over ranks of |G_r|^2. Both carry the same factor f/B
(c_i = g_i / f), which cancels in B_simple. With B_big = W B_small:

.. math::
    \widehat{\|G\|^2} \propto \frac{W\|G_{big}\|^2 - \|G_{small}\|^2}{W-1},\qquad
    \widehat{\operatorname{tr}\Sigma} \propto B\,W\,\frac{\|G_{small}\|^2 - \|G_{big}\|^2}{W-1}.

No per-sample statistic is needed. Steps whose ranks' batch sizes (or factors f) differ
are left out (NaN). As for B_simple, the ratio is smoothed as EMA(tr Sigma) / EMA(|G|^2).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradscope.analysis.coherence import concat_rows, has_columns, scope_of, tidy
from gradscope.analysis.noise import b_simple, ema
from gradscope.analysis.ranks import lowest_rank, ranks_of, uneven_steps


def local_global(small: np.ndarray, big: np.ndarray, batch: np.ndarray, world: np.ndarray) -> tuple:
    """(|G|^2, tr Sigma) up to the common factor, from the mean local |G_small|^2 over ranks
    of ``batch`` samples and the all-reduced |G_big|^2 over ``world`` ranks; NaN for W < 2.

    >>> g2, trace = local_global(np.array([3.0]), np.array([2.0]), np.array([4]), np.array([2]))
    >>> float(g2[0]), float(trace[0])
    (1.0, 8.0)
    """
    small, big, batch, world = (np.asarray(x, dtype=np.float64) for x in (small, big, batch, world))
    denominator = np.where(world > 1, world - 1, np.nan)
    return (world * big - small) / denominator, batch * world * (small - big) / denominator


def _per_layer(layers: pd.DataFrame, column: str) -> pd.DataFrame:
    """Sum of ``column`` per (step, rank, layer), NaN when any parameter's value is NaN."""
    frame = layers.assign(_v=layers[column].astype(float), _nan=layers[column].isna())
    grouped = frame.groupby(["step", "rank", "layer"], sort=True)
    out = grouped["_v"].sum().where(~grouped["_nan"].any())
    return out.rename(column).reset_index()


def ddp_moments(layers: pd.DataFrame | None, steps: pd.DataFrame | None) -> pd.DataFrame:
    """step, layer ("" for the model), small, big, batch, world: the inputs of
    ``local_global`` per step and layer, from every rank's LAYERS and STEPS rows."""
    columns = ["step", "layer", "small", "big", "batch", "world"]
    needed = ("step", "rank", "layer", "local_norm2", "sum_norm2")
    if not has_columns(layers, *needed) or len(ranks_of(layers)) < 2:
        return pd.DataFrame(columns=columns)
    local = _per_layer(layers, "local_norm2")
    small = local.groupby(["step", "layer"]).agg(small=("local_norm2", "mean"), world=("rank", "nunique"))
    big = _per_layer(lowest_rank(layers), "sum_norm2").set_index(["step", "layer"])["sum_norm2"]
    per_layer = small.join(big.rename("big")).reset_index()
    per_layer = per_layer.assign(batch=np.nan)
    if has_columns(steps, "step", "rank", "batch_size"):
        sizes = steps.groupby("step")["batch_size"].agg(["min", "max"])
        even = sizes[(sizes["min"] == sizes["max"]) & (sizes["min"] > 0)]["min"]
        even = even[~even.index.isin(uneven_steps(steps))]
        per_layer["batch"] = per_layer["step"].map(even).astype(float)
    model = per_layer.groupby("step").agg(small=("small", "sum"), big=("big", "sum"),
                                         batch=("batch", "first"), world=("world", "first"))
    model = model.reset_index().assign(layer="")
    return pd.concat([per_layer, model], ignore_index=True)[columns]


def ddp_noise_rows(
    layers: pd.DataFrame | None, steps: pd.DataFrame | None, *, decay: float = 0.9
) -> pd.DataFrame:
    """noise.b_simple_ddp (EMA-smoothed) and noise.b_simple_ddp_raw per layer and model, and
    noise.masked_uneven_ranks (value 1) at the steps whose S1 of the global batch is not
    observed (``ranks.uneven_steps``)."""
    moments = ddp_moments(layers, steps)
    uneven = pd.DataFrame({"step": sorted(uneven_steps(steps)), "value": 1.0})
    parts = [tidy(uneven, "masked_uneven_ranks", "value")]
    for layer, block in moments.sort_values("step").groupby("layer", sort=True):
        g2, trace = local_global(block["small"], block["big"], block["batch"], block["world"])
        frame = block.assign(b_simple_ddp=b_simple(ema(trace, decay), ema(g2, decay)),
                             b_simple_ddp_raw=b_simple(trace, g2))
        key = None if layer == "" else "layer"
        for name in ("b_simple_ddp", "b_simple_ddp_raw"):
            parts.append(tidy(frame, name, name, scope=scope_of(str(layer)), key=key))
    return concat_rows(parts)
