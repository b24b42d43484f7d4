r"""Gradient noise: the simple noise scale, Cockpit's batch-size tests, and GSNR.

Derivation of the unbiased estimators (McCandlish et al. 2018, "An Empirical Model of
Large-Batch Training", Appendix A), per-sample-loss convention (runs store g_i / f; the
metrics below are ratios, f cancels). Let the m per-sample
gradients g_i of a step be i.i.d. with mean G and covariance Sigma. Then

.. math::
    E\|g_i\|^2 = \|G\|^2 + \operatorname{tr}\Sigma, \qquad
    E\|\textstyle\sum_i g_i\|^2 = m^2\|G\|^2 + m\operatorname{tr}\Sigma

(the second: sum over i, j of E<g_i, g_j>, which is |G|^2 + tr Sigma for i = j and |G|^2
otherwise). With S2 = sum_i |g_i|^2 (so E S2 = m|G|^2 + m tr Sigma) and S1 = |sum_i g_i|^2
(= m^2 |G_m|^2, G_m the batch mean gradient):

.. math::
    E[S_1 - S_2] = m(m-1)\|G\|^2 \;\Rightarrow\; \widehat{\|G\|^2} = \frac{S_1-S_2}{m(m-1)}

    E[m S_2 - S_1] = m(m-1)\operatorname{tr}\Sigma \;\Rightarrow\;
    \widehat{\operatorname{tr}\Sigma} = \frac{S_2 - S_1/m}{m-1}

These are McCandlish's |G|^2 and S estimators with B_small = 1 and B_big = m. Both are
unbiased, but their ratio is not, so B_simple = tr Sigma / |G|^2 is smoothed as
EMA(tr Sigma) / EMA(|G|^2), the two averaged separately as McCandlish recommends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from gradscope.analysis.coherence import (
    ROW_COLUMNS,
    concat_rows,
    grams,
    has_columns,
    masked_detail,
    masked_steps,
    scope_of,
    step_moments,
    tidy,
)
from gradscope.analysis.thresholds import NOISE_FACTOR
from gradscope.analysis.types import NOT_RECORDED, Verdict, no_data

if TYPE_CHECKING:
    from gradscope.analysis.samples import SampleSummary


def noise_estimates(s1: np.ndarray, s2: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, ...]:
    """Unbiased (|G|^2, tr Sigma) from S1, S2 over m samples; NaN when m < 2.

    >>> g2, trace = noise_estimates(np.array([10.0]), np.array([6.0]), np.array([2]))
    >>> float(g2[0]), float(trace[0])
    (2.0, 1.0)
    """
    s1, s2, m = (np.asarray(x, dtype=np.float64) for x in (s1, s2, m))
    pairs = np.where(m > 1, m * (m - 1), np.nan)
    return (s1 - s2) / pairs, (m * s2 - s1) / pairs


def ema(values: np.ndarray, decay: float) -> np.ndarray:
    """Bias-corrected exponential moving average; NaN inputs are skipped (carried over).

    >>> ema(np.array([1.0, np.nan, 3.0]), 0.5).round(4).tolist()
    [1.0, 1.0, 2.3333]
    """
    out = np.full(len(values), np.nan)
    average, weight = 0.0, 0.0
    for index, value in enumerate(np.asarray(values, dtype=np.float64)):
        if np.isfinite(value):
            average = decay * average + (1.0 - decay) * value
            weight = decay * weight + (1.0 - decay)
        out[index] = average / weight if weight > 0 else np.nan
    return out


def b_simple(trace: np.ndarray, g2: np.ndarray) -> np.ndarray:
    """tr Sigma / |G|^2; NaN where the |G|^2 estimate is <= 0 (noise swamps the signal)."""
    trace, g2 = np.asarray(trace, dtype=np.float64), np.asarray(g2, dtype=np.float64)
    return np.where(g2 > 0, trace / np.where(g2 > 0, g2, 1.0), np.nan)


def noise_scale_rows(moments: pd.DataFrame, *, decay: float = 0.9) -> pd.DataFrame:
    """noise.b_simple (EMA-smoothed), noise.b_simple_raw, noise.batch_size per layer and model."""
    parts = []
    for layer, block in moments.sort_values("step").groupby("layer", sort=True):
        g2, trace = noise_estimates(block["s1"], block["s2"], block["m"])
        frame = block.assign(
            b_simple=b_simple(ema(trace, decay), ema(g2, decay)),
            b_simple_raw=b_simple(trace, g2),
            batch_size=block["m"].astype(float),
        )
        key = None if layer == "" else "layer"
        for name in ("b_simple", "b_simple_raw") + (("batch_size",) if layer == "" else ()):
            parts.append(tidy(frame, name, name, scope=scope_of(str(layer)), key=key))
    return concat_rows(parts)


def cockpit_tests(matrix: np.ndarray) -> dict[str, float]:
    r"""Norm, inner-product and orthogonality tests from a B x B Gram (Cockpit).

    With g_bar = (1/B) sum_i g_i, |g_bar|^2 = sum(K)/B^2, <g_i, g_bar> = (K 1)_i / B:

    .. math::
        \text{norm} = \sqrt{\frac{\sum_i\|g_i-\bar g\|^2}{(B-1)\,B\,\|\bar g\|^2}}\quad
        \text{(Byrd et al. 2012, eq. 3.9)}

        \text{inner} = \sqrt{\frac{\sum_i\langle g_i,\bar g\rangle^2 - B\|\bar g\|^4}
        {(B-1)\,B\,\|\bar g\|^4}}\quad\text{(Bollapragada et al. 2018, eq. 2.6)}

        \text{ortho} = \sqrt{\frac{\sum_i\|g_i\|^2-\sum_i\langle g_i,\bar g\rangle^2/\|\bar g\|^2}
        {(B-1)\,B\,\|\bar g\|^2}}\quad\text{(same, eq. 3.3)}

    Each is the largest theta (nu) for which the test passes, as Cockpit (Schneider et
    al. 2021) reports it; a value above about 1 says the batch is too small for the
    gradient's direction to be trusted. NaN when B < 2 or |g_bar|^2 <= 1e-12 tr(K) / B
    (a floor relative to the mean per-sample norm^2: no usable batch direction).

    >>> cockpit_tests(np.ones((3, 3)))  # identical gradients: no variance
    {'norm_test': 0.0, 'inner_product_test': 0.0, 'orthogonality_test': 0.0}
    """
    size = matrix.shape[0]
    mean2 = matrix.sum() / size**2
    if size < 2 or not mean2 > 1e-12 * np.trace(matrix) / size:
        return dict.fromkeys(("norm_test", "inner_product_test", "orthogonality_test"), np.nan)
    projections = matrix.sum(axis=1) / size
    scale = (size - 1) * size
    variance = np.trace(matrix) - size * mean2
    inner = (projections**2).sum() - size * mean2**2
    ortho = np.trace(matrix) - (projections**2).sum() / mean2
    root = lambda x: float(np.sqrt(max(x, 0.0)))  # noqa: E731  (round-off can go below 0)
    return {
        "norm_test": root(variance / (scale * mean2)),
        "inner_product_test": root(inner / (scale * mean2**2)),
        "orthogonality_test": root(ortho / (scale * mean2)),
    }


def cockpit_rows(gram: pd.DataFrame) -> pd.DataFrame:
    """The three tests per (step, layer) and model, averaged over the step's micro-batches."""
    records = [
        (step, name, scope_of(layer), layer, value)
        for by_layer in (False, True)
        for step, _micro, layer, matrix in grams(gram, by_layer=by_layer)
        for name, value in cockpit_tests(matrix).items()
    ]
    frame = pd.DataFrame(records, columns=list(ROW_COLUMNS))
    return frame.groupby(list(ROW_COLUMNS[:4]), as_index=False, sort=False)["value"].mean()


GSNR_FLOOR = 1e-9  # a coordinate counts when its variance exceeds this fraction of its mean square


def gsnr_estimates(
    count: np.ndarray, total: np.ndarray, squares: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    r"""Bias-corrected GSNR and its standard error per group, from sketch moments.

    Liu et al. (2020), "Understanding Why Neural Networks Generalize Well Through GSNR of
    Parameters", define GSNR_j = mu_j^2 / sigma_j^2 per coordinate. Over m samples with
    mean muhat and unbiased variance s^2, the plug-in muhat^2 / s^2 is biased upward: for
    Gaussian samples muhat and s^2 are independent, E muhat^2 = mu^2 + sigma^2 / m and
    E[1 / s^2] = (m - 1) / ((m - 3) sigma^2), so E[muhat^2 / s^2] = (r + 1/m)(m - 1)/(m - 3)
    (0.175 for r = 0 at m = 8). The estimate

    .. math::
        \hat r_j = \frac{m-3}{m-1}\,\frac{\hat\mu_j^2}{s_j^2} - \frac1m

    is unbiased for Gaussian per-sample gradients (m > 3; NaN below). The result is the
    mean of r_j over the coordinates whose variance exceeds GSNR_FLOOR times their mean
    square (a relative floor: a noise-free coordinate has no finite GSNR), and its standard
    error std_j(r_j) / sqrt(k) over the k DISTINCT r_j (``_distinct_se``: proportional
    sketch coordinates count once); coordinates that are correlated without being
    proportional still make it an underestimate (docs/metrics.md). Shapes: count (G,),
    total and squares (G, k); returns two (G,) arrays.
    """
    count = np.asarray(count, dtype=np.float64)[:, None]
    total, squares = np.asarray(total, dtype=np.float64), np.asarray(squares, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = total / count
        variance = (squares - count * mean**2) / (count - 1)
        keep = (variance > GSNR_FLOOR * squares / count) & (count > 3)
        ratio = (count - 3) / (count - 1) * mean**2 / np.where(keep, variance, 1.0) - 1.0 / count
    ratio = np.where(keep, ratio, np.nan)
    kept = keep.sum(axis=1)
    value = np.where(kept > 0, np.nansum(ratio, axis=1) / np.maximum(kept, 1), np.nan)
    return value, np.array([_distinct_se(row) for row in ratio])


def _distinct_se(ratios: np.ndarray) -> float:
    """std / sqrt(n) over the DISTINCT r_j of one group (NaN with fewer than two).

    Sketch coordinates that are proportional across samples have the same GSNR (it is
    scale-free): a k x k Kronecker sketch P_out G_i P_in^T of a one-output layer
    (Linear(d, 1): G_i = delta_i x_i^T) is (P_out delta_i)(P_in x_i)^T, k copies of the same
    k coordinates up to scale. Counting them as k^2 independent values understated the
    step-to-step spread ~3x (k = 8); values equal to 4 significant digits are counted once.
    """
    finite = ratios[np.isfinite(ratios)]
    with np.errstate(divide="ignore", invalid="ignore"):
        digits = np.floor(np.log10(np.abs(finite), where=finite != 0, out=np.zeros_like(finite)))
    distinct = np.unique(np.round(finite / 10.0**(digits - 3)) * 10.0**(digits - 3))
    if len(distinct) < 2:
        return float("nan")
    return float(np.std(distinct, ddof=1) / np.sqrt(len(distinct)))


def gsnr(sketches: np.ndarray) -> float:
    """Mean bias-corrected GSNR over sketch coordinates (``gsnr_estimates``) of one group
    of sketches s_i (B x k, one row per sample). Sketch coordinates are random
    projections of the gradient, so this is the GSNR of random directions, not the
    per-parameter GSNR of the paper.

    >>> round(gsnr(np.array([[1.0, 0.0], [3.0, 2.0], [1.0, 2.0], [3.0, 0.0], [2.0, 1.0]])), 4)
    1.05
    """
    values = np.asarray(sketches, dtype=np.float64)
    moments = np.array([len(values)]), values.sum(axis=0)[None], (values**2).sum(axis=0)[None]
    return float(gsnr_estimates(*moments)[0][0])


def step_spread(frame: pd.DataFrame) -> pd.Series:
    """Per layer, the step-to-step spread of its gsnr by successive differences (von Neumann):
    sqrt(mean((g_t - g_{t-1})^2) / 2) over its recorded steps (3 differences or more, else
    NaN), on each of its rows. Fresh samples each step make it the estimate's noise plus
    any real change between steps: an upper bound that correlated sketch coordinates
    cannot shrink (the Gram-free se across coordinates can)."""
    ordered = frame.sort_values("step")
    squares = ordered.groupby("layer")["gsnr"].diff() ** 2
    stats = squares.groupby(ordered["layer"]).agg(["mean", "count"])
    spread = np.sqrt(stats["mean"] / 2).where(stats["count"] >= 3)
    return frame["layer"].map(spread).astype(float)


def gsnr_rows(sketch_moments: pd.DataFrame) -> pd.DataFrame:
    """noise.gsnr and noise.gsnr_se per (step, layer) from sketch moments
    (``analysis.sketches``), for every group at once (``gsnr_estimates``). gsnr_se is the
    larger of the across-coordinate se and the layer's step-to-step spread (``step_spread``)."""
    if not len(sketch_moments):
        return pd.DataFrame(columns=list(ROW_COLUMNS))
    value, error = gsnr_estimates(sketch_moments["count"].to_numpy(np.float64),
                                  np.stack(sketch_moments["sum"]), np.stack(sketch_moments["sumsq"]))
    frame = sketch_moments[["step", "layer"]].assign(gsnr=value, gsnr_se=error)
    frame["gsnr_se"] = np.fmax(frame["gsnr_se"], step_spread(frame))
    return concat_rows([tidy(frame, name, name, scope="layer", key="layer") for name in ("gsnr", "gsnr_se")])


def noise_metrics(
    layers: pd.DataFrame | None,
    samples: SampleSummary | None,
    gram: pd.DataFrame | None,
    *,
    decay: float = 0.9,
) -> pd.DataFrame:
    """All noise rows (step, name, scope, key, value); missing inputs give fewer rows.
    Steps left out for non-finite per-sample values get a ``masked_nonfinite`` row."""
    moments = step_moments(layers, samples, gram)
    parts = [noise_scale_rows(moments, decay=decay)] if len(moments) else []
    if has_columns(gram, "step", "micro", "layer", "size", "values"):
        parts.append(cockpit_rows(gram))
    if samples is not None and len(samples.sketch_moments):
        parts.append(gsnr_rows(samples.sketch_moments))
    if parts:
        parts.append(masked_steps(layers, samples))
    return concat_rows(parts)


def noise_verdict(rows: pd.DataFrame, *, factor: float = NOISE_FACTOR) -> Verdict:
    """Batch size m against the smoothed B_simple (median over the later half of steps).

    McCandlish et al. (2018): the critical batch B_crit ~ B_simple balances steps and
    compute. m > 10 B_simple: more samples barely shorten training (each step's gradient
    is already nearly exact), so most of the compute is wasted; m < B_simple / 10: the
    step is noise-dominated, a larger batch would cut the steps needed almost linearly.
    The factor 10 (gradscope.analysis.thresholds.NOISE_FACTOR) leaves room for B_simple's
    approximation of B_crit (exact only for a well-conditioned Hessian) and for its noise.
    """
    source = "McCandlish et al. 2018 (batch size vs B_simple)"
    model = rows[rows["scope"] == "model"]
    measured = model[model["name"] == "b_simple"]
    series = measured.dropna(subset=["value"]).sort_values("step")
    sizes = model[model["name"] == "batch_size"]["value"].dropna()
    if len(measured) and not len(series):  # S1/S2 recorded, the estimate undefined at every step
        return no_data("noise", NOT_RECORDED, "B_simple undefined at every recorded step (the |G|^2 "
                       "estimate (S1 - S2) / (m (m - 1)) was not positive: noise-dominated or too few "
                       "samples)", source)
    if not len(series) or not len(sizes):
        return no_data("noise", NOT_RECORDED, "per-sample gradient norms (S1/S2) not recorded", source)
    scale = float(series.iloc[len(series) // 2 :]["value"].median())
    batch = float(sizes.median())
    common = {"metric": "noise.b_simple", "value": scale, "source": source, "details": masked_detail(rows)}
    if batch > factor * scale:
        summary = f"batch {batch:.0f} > {factor:g} x B_simple {scale:.3g}: compute wasted"
        return Verdict("noise", "warn", summary, threshold=factor * scale, **common)
    if batch < scale / factor:
        summary = f"batch {batch:.0f} < B_simple {scale:.3g} / {factor:g}: noise-dominated steps"
        return Verdict("noise", "warn", summary, threshold=scale / factor, **common)
    summary = f"batch {batch:.0f} within {factor:g}x of B_simple {scale:.3g}"
    return Verdict("noise", "ok", summary, threshold=factor * scale, **common)
