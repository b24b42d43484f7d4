r"""Cosines between a step's vector and an earlier step's: gradient autocorrelation and
update oscillation, both from seeded sketches (no full-size copies).

- ``coherence.grad_autocorr`` = cos(g_t, g_{t-k}) per layer and for the model, g_t the
  step's gradient. The per-sample sketches are one linear projection P (fixed per layer
  for the run), so the sum of a step's per-sample sketches is P g_t (the ``sum`` of the
  step's sketch moments, gradscope.analysis.sketches). Sketch inner products estimate the
  gradients' (Johnson-Lindenstrauss: unbiased, variance about 2 / (number of sketch
  coordinates) for a cosine near 0). ``coherence.grad_autocorr_se`` is its standard
  error: for a Gaussian random projection to d numbers the estimate of a cosine c is
  distributed like the (uncentred) correlation of d pairs, with sd about (1 - c^2) / sqrt(d)
  (the Fisher normal approximation of a correlation's sampling distribution); d is the
  layer's sketch size, and for the model the effective d = k (sum_l w_l)^2 / sum_l w_l^2,
  w_l = |P_l g_t| |P_l g_{t-1}| (layers project independently; the equal-weight case gives
  k times the number of layers). c is the estimate itself (plug-in), so the error is
  understated where the estimate sits near +-1 by chance; a diagnostic row that drives no
  verdict. grad_autocorr is the cosine of the two batch gradients, the directions the
  optimizer took, so per-sample noise shrinks it toward 0 like any batch-gradient cosine.
  Near -1: the gradient flips sign from step to step.
- ``stability.update_cos`` = cos(u_t, u_{t-1}) per layer and for the model, u_t = W_{t+1}
  - W_t, from LAYERS.update_sketch (the same projection every step for a parameter).
  On a quadratic with curvature lambda, gradient descent with lr eta has u_{t+1} =
  (1 - eta lambda) u_t along each eigenvector: past eta = 2 / lambda_max the top
  direction grows with a flipping sign and dominates, so update_cos tends to -1 (the
  edge of stability, Cohen et al. 2021; "Benign Oscillation of SGD", Lu et al. 2024);
  below 1 / lambda_max every direction keeps its sign and update_cos > 0.

Layer and model values sum the dots and squared norms over the layer's (the model's)
parameters or layers present at both steps: cos = sum dot / sqrt(sum |a|^2 sum |b|^2),
no epsilon (gradscope.analysis.cosines). Only step pairs exactly k apart count, so a run
recorded every N > 1 steps has no lag-1 value.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradscope.analysis.coherence import ROW_COLUMNS, concat_rows, has_columns, tidy
from gradscope.analysis.cosines import cosine

DOT_COLUMNS = ("step", "key", "dot", "norm2", "norm2_prev")


def _vectors(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Which rows hold a vector of the most common non-zero length, and those vectors (N x k)."""
    lengths = np.array([len(v) if hasattr(v, "__len__") else 0 for v in column], dtype=np.int64)
    if not (lengths > 0).any():
        return np.zeros(len(column), dtype=bool), np.zeros((0, 0))
    width = int(np.bincount(lengths[lengths > 0]).argmax())
    keep = lengths == width
    return keep, np.stack([np.asarray(v, dtype=np.float64) for v in column[keep]])


def lag_dots(steps: np.ndarray, keys: np.ndarray, vectors: np.ndarray, lag: int = 1) -> pd.DataFrame:
    """<v_t, v_{t-lag}>, |v_t|^2 and |v_{t-lag}|^2 for each (step t, key) whose key also has
    a vector at step t - lag. ``vectors`` (N x k) row-aligned with ``steps`` and ``keys``."""
    frame = pd.DataFrame({"step": np.asarray(steps, dtype=np.int64), "key": keys,
                          "row": np.arange(len(steps))})
    frame = frame.drop_duplicates(["step", "key"], keep="last")
    earlier = frame.assign(step=frame["step"] + lag)
    joined = frame.merge(earlier, on=["step", "key"], suffixes=("", "_prev"))
    now, before = vectors[joined["row"].to_numpy()], vectors[joined["row_prev"].to_numpy()]
    return pd.DataFrame({
        "step": joined["step"].to_numpy(), "key": joined["key"].to_numpy(),
        "dot": np.einsum("ij,ij->i", now, before),
        "norm2": np.einsum("ij,ij->i", now, now), "norm2_prev": np.einsum("ij,ij->i", before, before),
    })


def lag_cosine_rows(dots: pd.DataFrame, name: str, layer_of: pd.Series | None = None) -> pd.DataFrame:
    """Rows ``name`` per (step, layer) and per step for the model (key ""), from
    ``lag_dots`` rows; ``layer_of`` maps a key (a parameter) to its layer (None: keys are
    layers already)."""
    if not len(dots):
        return concat_rows([])
    sums = ["dot", "norm2", "norm2_prev"]
    layered = dots.assign(layer=dots["key"].map(layer_of) if layer_of is not None else dots["key"])
    per_layer = layered.groupby(["step", "layer"], as_index=False)[sums].sum()
    model = layered.groupby("step", as_index=False)[sums].sum()
    parts = []
    for frame, key in ((model, None), (per_layer, "layer")):
        frame = frame.assign(value=cosine(frame["dot"], frame["norm2"], frame["norm2_prev"]))
        parts.append(tidy(frame, name, "value", scope="layer" if key else "model", key=key))
    return concat_rows(parts)


def grad_autocorr_rows(sketch_moments: pd.DataFrame, lags: tuple[int, ...] = (1,)) -> pd.DataFrame:
    """coherence.grad_autocorr (lag 1) and grad_autocorr_<k> (other lags) from the
    per-(step, layer) sketch sums (sketches.MOMENT_COLUMNS)."""
    if not has_columns(sketch_moments, "step", "layer", "sum"):
        return concat_rows([])
    keep, vectors = _vectors(sketch_moments["sum"])
    chosen = sketch_moments[keep]
    steps, layers = chosen["step"].to_numpy(), chosen["layer"].to_numpy(object)
    parts = []
    for lag in lags:
        name = "grad_autocorr" if lag == 1 else f"grad_autocorr_{lag}"
        dots = lag_dots(steps, layers, vectors, lag)
        parts += [lag_cosine_rows(dots, name), sketch_se_rows(dots, vectors.shape[1], f"{name}_se")]
    return concat_rows(parts)


def sketch_se_rows(dots: pd.DataFrame, width: int, name: str) -> pd.DataFrame:
    """Standard error (1 - c^2) / sqrt(d) of the sketch cosines of ``lag_dots`` rows whose
    keys are layers, each layer projected to ``width`` numbers (module docstring)."""
    if not len(dots) or width < 1:
        return concat_rows([])
    sums = ["dot", "norm2", "norm2_prev"]
    weight = np.sqrt(np.clip(dots["norm2"] * dots["norm2_prev"], 0.0, None))
    layered = dots.assign(layer=dots["key"], w=weight, w2=weight**2)
    model = layered.groupby("step", as_index=False)[[*sums, "w", "w2"]].sum()
    model_d = width * model["w"] ** 2 / model["w2"].where(model["w2"] > 0)
    parts = []
    for frame, dims, key in ((model, model_d, None), (layered, float(width), "layer")):
        c = cosine(frame["dot"], frame["norm2"], frame["norm2_prev"])
        frame = frame.assign(value=(1.0 - c**2) / np.sqrt(dims))
        parts.append(tidy(frame, name, "value", scope="layer" if key else "model", key=key))
    return concat_rows(parts)


def update_oscillation_rows(layers: pd.DataFrame | None) -> pd.DataFrame:
    """stability.update_cos = cos(u_t, u_{t-1}) per layer and model from LAYERS.update_sketch
    (one row per (step, parameter)); no rows when the column is missing or all null."""
    if not has_columns(layers, "step", "layer", "param", "update_sketch"):
        return pd.DataFrame(columns=list(ROW_COLUMNS))
    keep, vectors = _vectors(layers["update_sketch"])
    chosen = layers[keep]
    params = chosen["layer"].astype(str) + "\x00" + chosen["param"].astype(str)
    layer_of = pd.Series(chosen["layer"].astype(str).to_numpy(), index=params.to_numpy())
    layer_of = layer_of[~layer_of.index.duplicated()]
    dots = lag_dots(chosen["step"].to_numpy(), params.to_numpy(object), vectors, 1)
    return lag_cosine_rows(dots, "update_cos", layer_of)
