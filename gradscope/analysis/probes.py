"""Instability probes (the PROBES table) as stability metrics and findings.

Metrics (family stability), per layer and for the model:
- attn_max_logit: max over heads of max |q.k|/sqrt(d) (Wortsman et al. 2023);
  attn_entropy_rel: min over heads of mean attention entropy / log(keys seen) (1 uniform,
  0 one-hot; Zhai et al. 2023); attn_weight_bound: max over heads of the weight-only bound
  sigma_max(W_Q,h^T W_K,h)/sqrt(d_h).
- logit_log_z, logit_max, logit_gap, softmax_collapse, softmax_saturated, nlm_cos: the
  output logits a cross-entropy consumed (Prieto et al. 2025).
- dead_units, act_rms, act_max_abs: inputs of Linear / Conv layers.
- sharpness, sharpness_edge, sharpness_edge_ratio, hessian_trace, hessian_trace_se:
  curvature, when recorded (Cohen et al. 2021, 2022).
Findings name the metric they come from; thresholds live in gradscope.analysis.thresholds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradscope.analysis.coherence import concat_rows, has_columns, tidy
from gradscope.analysis.thresholds import (
    ATTN_GROWTH,
    ATTN_LOGIT,
    DEAD_UNITS,
    EDGE_RATIO,
    ENTROPY_COLLAPSE,
    SOFTMAX_COLLAPSE,
)
from gradscope.analysis.types import Level

Finding = tuple[Level, str, str, float, float, tuple[int, ...]]
# (probe, key in the table, metric name, how heads / layers combine)
PER_LAYER = (
    ("attention", "max_logit", "attn_max_logit", "max"),
    ("attention", "entropy_rel", "attn_entropy_rel", "min"),
    ("attention", "weight_bound", "attn_weight_bound", "max"),
    ("logits", "log_z_mean", "logit_log_z", "max"),
    ("logits", "max_logit", "logit_max", "max"),
    ("logits", "gap_mean", "logit_gap", "max"),
    ("logits", "collapse_frac", "softmax_collapse", "max"),
    ("logits", "saturated_frac", "softmax_saturated", "max"),
    ("logits", "nlm_cos", "nlm_cos", "max"),
    ("activation", "dead_frac", "dead_units", "max"),
    ("activation", "rms", "act_rms", "max"),
    ("activation", "max_abs", "act_max_abs", "max"),
)
CURVATURE = {"lambda_max": "sharpness", "edge": "sharpness_edge", "edge_ratio": "sharpness_edge_ratio",
             "trace": "hessian_trace", "trace_se": "hessian_trace_se"}
PROBE_METRICS = tuple(m for _, _, m, _ in PER_LAYER) + tuple(CURVATURE.values())
# The source behind each probe finding's threshold (the verdict's ``source`` when it leads).
SOURCES = {
    "attn_max_logit": f"attention logit growth: max |q.k|/sqrt(d) >= {ATTN_LOGIT:g} and {ATTN_GROWTH:g}x "
                      "its first value (Wortsman et al. 2023)",
    "attn_entropy_rel": f"attention entropy < {ENTROPY_COLLAPSE:g} of uniform (Zhai et al. 2023)",
    "softmax_collapse": "softmax exactly one-hot in the training dtype (Prieto et al. 2025)",
    "dead_units": f">= {DEAD_UNITS:.0%} of input units zero for every sample (dying ReLU, Lu et al. 2019)",
    "sharpness_edge_ratio": "lambda_max >= 2/eta (SGD), (2+2b1)/((1-b1)eta) preconditioned (Adam); "
                            "Cohen et al. 2021, 2022",
}


def _heads(probes: pd.DataFrame) -> pd.DataFrame:
    """Per-head attention keys (max_logit.h0, ...) split into quantity and head, with
    entropy_rel = entropy / log_keys added per head."""
    frame = probes.assign(quantity=probes["key"].str.replace(r"\.h\d+$", "", regex=True))
    attention = frame[frame["probe"] == "attention"]
    entropy = attention[attention["quantity"] == "entropy"]
    log_keys = attention[attention["key"] == "log_keys"].set_index(["step", "layer"])["value"]
    if len(entropy) and len(log_keys):
        scale = log_keys.reindex(pd.MultiIndex.from_frame(entropy[["step", "layer"]])).to_numpy()
        relative = entropy.assign(quantity="entropy_rel", value=entropy["value"].to_numpy() / np.where(
            scale > 0, scale, np.nan))
        frame = pd.concat([frame, relative], ignore_index=True)
    return frame


def probe_metrics(probes: pd.DataFrame | None) -> pd.DataFrame:
    """Tidy stability rows (step, name, scope, key, value) from the PROBES table."""
    if not has_columns(probes, "step", "layer", "probe", "key", "value"):
        return concat_rows([])
    frame = _heads(probes.dropna(subset=["value"]))
    parts = []
    for probe, quantity, name, how in PER_LAYER:
        rows = frame[(frame["probe"] == probe) & (frame["quantity"] == quantity)]
        if not len(rows):
            continue
        per_layer = rows.groupby(["step", "layer"], as_index=False)["value"].agg(how)
        parts.append(tidy(per_layer, name, "value", scope="layer", key="layer"))
        parts.append(tidy(per_layer.groupby("step", as_index=False)["value"].agg(how), name, "value"))
    curvature = frame[(frame["probe"] == "curvature") & frame["key"].isin(list(CURVATURE))]
    for key, rows in curvature.groupby("key"):
        parts.append(tidy(rows, CURVATURE[str(key)], "value"))
    return concat_rows(parts)


def _layer_series(rows: pd.DataFrame, name: str) -> dict[str, pd.Series]:
    """layer -> its values by step for a per-layer metric."""
    picked = rows[(rows["name"] == name) & (rows["scope"] == "layer")].dropna(subset=["value"])
    return {str(layer): block.set_index("step")["value"].sort_index()
            for layer, block in picked.groupby("key")}


def _steps(mask: pd.Series) -> tuple[int, ...]:
    return tuple(int(s) for s in mask[mask].index)


def probe_findings(rows: pd.DataFrame) -> list[Finding]:
    """(level, text, metric, value, threshold, steps) for every probe rule that fires."""
    found: list[Finding] = []
    for layer, series in _layer_series(rows, "attn_max_logit").items():
        grown = (series >= ATTN_LOGIT) & (series >= ATTN_GROWTH * series.iloc[0])
        if grown.any():
            text = (f"attention logit growth in {layer} (attn_max_logit {series.max():.3g}, "
                    f"{series.max() / max(series.iloc[0], 1e-12):.3g}x its first value)")
            found.append(("warn", text, "attn_max_logit", float(series.max()), ATTN_LOGIT, _steps(grown)))
    for layer, series in _layer_series(rows, "attn_entropy_rel").items():
        collapsed = (series < ENTROPY_COLLAPSE) & (series.iloc[0] >= 3 * ENTROPY_COLLAPSE)
        if collapsed.any():
            text = (f"attention entropy collapse in {layer} (attn_entropy_rel {series.min():.2g} of a "
                    f"uniform row's, from {series.iloc[0]:.2g})")
            found.append(("warn", text, "attn_entropy_rel", float(series.min()), ENTROPY_COLLAPSE,
                          _steps(collapsed)))
    for layer, series in _layer_series(rows, "softmax_collapse").items():
        hit = series > SOFTMAX_COLLAPSE
        if hit.sum() >= 2:
            text = (f"softmax collapse in {layer}'s logits (softmax_collapse: up to {series.max():.0%} "
                    "of samples one-hot in the training dtype)")
            found.append(("warn", text, "softmax_collapse", float(series.max()), SOFTMAX_COLLAPSE,
                          _steps(hit)))
    for layer, series in _layer_series(rows, "dead_units").items():
        dead = series >= DEAD_UNITS
        if dead.sum() >= 2:
            text = (f"dead units in {layer}'s input (dead_units: {series.max():.0%} of units zero for "
                    "every sample)")
            found.append(("warn", text, "dead_units", float(series.max()), DEAD_UNITS, _steps(dead)))
    ratio = rows[(rows["name"] == "sharpness_edge_ratio") & (rows["scope"] == "model")]
    ratio = ratio.dropna(subset=["value"])
    past = ratio[ratio["value"] >= EDGE_RATIO]
    if len(past):
        text = ("sharpness past the edge of stability (sharpness_edge_ratio up to "
                f"{past['value'].max():.3g}: lambda_max of the Hessian at or above the optimizer's edge, "
                "Cohen et al.)")
        steps = tuple(int(s) for s in past["step"])
        found.append(("warn", text, "sharpness_edge_ratio", float(past["value"].max()), EDGE_RATIO, steps))
    return found
