"""Training stability from per-step scalars: spikes, dead / vanishing / exploding layers,
update-to-weight ratios, distance from init, oscillation and non-finite values.

Inputs: STEPS (loss, grad_norm) and LAYERS (grad_norm, weight_norm, update_norm,
init_distance, nonfinite), reduced to one row per (step, layer) by ``layer_sums``.
Oscillation as cos(update_t, update_{t-1}) needs the update vectors, which are not
recorded; the sign-flip rate of consecutive loss deltas stands in for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from gradscope.analysis.clipping import clip_findings, clip_rows, tensor_spike_rows
from gradscope.analysis.coherence import EPS, concat_rows, has_columns, layer_sums, tidy
from gradscope.analysis.probes import SOURCES, probe_findings, probe_metrics
from gradscope.analysis.text import step_list
from gradscope.analysis.thresholds import (
    EXPLODE,
    MIN_HISTORY,
    MIN_STEPS,
    SPIKE_Z,
    UPDATE_RATIO,
    VANISH,
    WINDOW,
)
from gradscope.analysis.types import NOT_RECORDED, TOO_FEW_STEPS, Level, Verdict, no_data
from gradscope.analysis.warmup import scored_note, warmup_findings, warmup_rows

__all__ = ["EXPLODE", "MIN_HISTORY", "SPIKE_Z", "VANISH", "WINDOW", "robust_z", "stability_metrics",
           "stability_verdict", "curvature_reason"]

MAD_SCALE = 1.4826  # MAD -> standard deviation for normal data
RELATIVE_FLOOR = 1e-2  # the spread never counts as below 1% of the median level
# SPIKE_Z, WINDOW, MIN_HISTORY, the update-ratio band and VANISH / EXPLODE, with their
# sources, live in gradscope.analysis.thresholds (re-exported here).
UPDATE_RATIO_BAND = (UPDATE_RATIO.low, UPDATE_RATIO.high)


def robust_z(
    values: pd.Series, window: int = WINDOW, min_periods: int = MIN_HISTORY, *, log: bool = False
) -> pd.Series:
    r"""Robust z-score of each value against the PREVIOUS ``window`` values.

    .. math::
        z_t = \frac{x_t - \operatorname{med}_{t-w..t-1}}
        {\max(1.4826\,\operatorname{MAD}_{t-w..t-1},\ 0.01\,|\operatorname{med}|) + 10^{-12}}

    NaN until ``min_periods`` previous values exist. NaN values (steps not recorded under
    ``--every N``, a NaN loss) are gaps: the window holds the previous ``window`` observed
    values, and a NaN value scores NaN. The 1% floor keeps a flat history (MAD 0) from
    turning any small change into a spike: after a flat loss a jump must exceed 6% of its
    level to count.

    ``log=True`` scores log(x) instead (values <= 0 become NaN) with an absolute floor
    of 0.01 (1% of the level, as above). Gradient norms use it: a mini-batch gradient
    norm varies multiplicatively and is skewed to the right, which a linear MAD reads
    as spikes.

    >>> robust_z(pd.Series([1.0, 2.0, 1.0, 2.0, 1.0, 2.0, 9.0]), min_periods=5).round(2).tolist()[-1]
    10.12
    """
    if log:
        values = np.log(values.where(values > 0))
    observed = values.dropna()  # steps not recorded (--every N) are gaps, not history
    return _robust_z_observed(observed, window, min_periods, log).reindex(values.index)


def _robust_z_observed(values: pd.Series, window: int, min_periods: int, log: bool) -> pd.Series:
    history = values.shift(1).rolling(window, min_periods=min_periods)
    median = history.median()
    mad = (
        values.shift(1)
        .rolling(window, min_periods=min_periods)
        .apply(lambda x: np.nanmedian(np.abs(x - np.nanmedian(x))), raw=True)
    )
    floor = RELATIVE_FLOOR if log else RELATIVE_FLOOR * median.abs()
    scale = np.maximum(MAD_SCALE * mad, floor) + EPS
    return (values - median) / scale


def running_max_ratio(values: pd.Series) -> pd.Series:
    """x_t / max(x_0..x_{t-1}); NaN for the first value or a zero running max."""
    previous = values.shift(1).cummax()
    return values / previous.where(previous > 0)


def flip_rate(loss: pd.Series, window: int = WINDOW) -> pd.Series:
    """Fraction of sign flips between consecutive loss deltas over the last ``window``.

    About 0.5 for noisy descent, near 1 when the loss zig-zags step by step.

    >>> flip_rate(pd.Series([1.0, 2.0, 1.0, 2.0, 1.0]), window=3).tolist()[-1]
    1.0
    """
    sign = np.sign(loss.diff())
    flips = (sign * sign.shift(1) < 0).astype(float).where(sign.shift(1).notna())
    return flips.rolling(window, min_periods=2).mean()


def _step_rows(steps: pd.DataFrame) -> list[pd.DataFrame]:
    """loss, loss_spike_z, grad_norm, grad_norm_spike_z, grad_norm_max_ratio, loss_flip_rate."""
    frame = steps.sort_values("step").drop_duplicates("step").reset_index(drop=True)
    parts = []
    if "loss" in frame:
        loss = frame["loss"].astype(float)
        # linear scale: a loss can be <= 0, and a 5x jump on a fast-falling loss scores
        # only ~5 on the log scale (its trend inflates the log MAD as much as the linear one)
        frame = frame.assign(loss_spike_z=robust_z(loss), loss_flip_rate=flip_rate(loss), loss_value=loss)
        parts += [tidy(frame, "loss", "loss_value"), tidy(frame, "loss_spike_z", "loss_spike_z")]
        parts.append(tidy(frame, "loss_flip_rate", "loss_flip_rate"))
    if "grad_norm" in frame:
        norm = frame["grad_norm"].astype(float)
        frame = frame.assign(z=robust_z(norm, log=True), ratio=running_max_ratio(norm), norm=norm)
        parts += [tidy(frame, "grad_norm", "norm"), tidy(frame, "grad_norm_spike_z", "z")]
        parts.append(tidy(frame, "grad_norm_max_ratio", "ratio"))
    return parts


def _layer_rows(per_layer: pd.DataFrame) -> list[pd.DataFrame]:
    """Per-layer grad_norm, grad_norm_rel, update_ratio, init_distance, dead, frozen."""
    frame = per_layer.copy()
    parts = []
    if "grad_norm" in frame:
        median = frame.groupby("step")["grad_norm"].transform("median")
        frame["grad_norm_rel"] = frame["grad_norm"] / median.where(median > 0)
        frame["dead"] = (frame["grad_norm"] == 0).astype(float)
        parts += [tidy(frame, n, n, scope="layer", key="layer") for n in ("grad_norm", "grad_norm_rel")]
        parts.append(tidy(frame[frame["dead"] > 0], "dead", "dead", scope="layer", key="layer"))
    if {"update_norm", "weight_norm"} <= set(frame):
        frame["update_ratio"] = frame["update_norm"] / frame["weight_norm"].clip(lower=EPS)
        frozen = (frame["update_norm"] == 0) & (frame.get("grad_norm", 1.0) != 0)
        frame["frozen"] = frozen.astype(float)
        parts.append(tidy(frame, "update_ratio", "update_ratio", scope="layer", key="layer"))
        parts.append(tidy(frame[frozen], "frozen", "frozen", scope="layer", key="layer"))
    if "init_distance" in frame:
        parts.append(tidy(frame, "init_distance", "init_distance", scope="layer", key="layer"))
        model = frame.groupby("step", as_index=False)["init_distance"].apply(
            lambda d: float(np.sqrt((d**2).sum()))
        )
        parts.append(tidy(model, "init_distance", "init_distance"))
        parts.append(_log_slope(model))
    return parts


def _log_slope(model: pd.DataFrame) -> pd.DataFrame:
    """Least-squares slope of the model's init distance against log(step + 1), step -1.

    Hoffer et al. 2017 ("Train longer, generalize better"): |W_t - W_0| grows like log t
    for a random walk on a random potential, so a steady slope is the normal regime.
    """
    usable = model.dropna(subset=["init_distance"])
    if len(usable) < 3:
        return concat_rows([])
    slope = np.polyfit(np.log1p(usable["step"].to_numpy(float)), usable["init_distance"], 1)[0]
    return tidy(pd.DataFrame({"step": [-1], "v": [slope]}), "init_distance_log_slope", "v")


def _nonfinite_rows(
    steps: pd.DataFrame | None, per_layer: pd.DataFrame, samples: pd.DataFrame | None
) -> pd.DataFrame:
    """stability.nonfinite per step: layers with inf/nan gradients (LAYERS.nonfinite), + 1
    for a non-finite loss, + 1 for an infinite total grad norm, + 1 when a sample's
    recorded gradient statistics were inf/NaN (``samples``: step, rows, from
    SampleSummary.nonfinite). The last catches an overflow that the script zeroed or
    skipped before the optimizer step: it happened even if the weights never saw it."""
    counts = []
    if "nonfinite" in per_layer:
        counts.append(per_layer.groupby("step")["nonfinite"].sum().astype(float))
    if has_columns(steps, "step", "loss"):  # NaN counts: a loss the script computed as NaN
        bad = ~np.isfinite(steps["loss"].astype(float))
        counts.append(bad.groupby(steps["step"]).any().astype(float))
    if has_columns(steps, "step", "grad_norm"):  # NaN there means "not measured"
        bad = np.isinf(steps["grad_norm"].astype(float))
        counts.append(bad.groupby(steps["step"]).any().astype(float))
    if has_columns(samples, "step", "rows"):
        counts.append(pd.Series(1.0, index=samples["step"].astype(np.int64).to_numpy()))
    if not counts:
        return concat_rows([])
    total = pd.concat(counts, axis=1).fillna(0.0).sum(axis=1).rename("value").rename_axis("step")
    parts = [tidy(total.reset_index(), "nonfinite", "value")]
    if has_columns(samples, "step", "rows"):
        parts.append(tidy(samples.assign(value=samples["rows"].astype(float)), "nonfinite_samples", "value"))
    return concat_rows(parts)


def stability_metrics(
    steps: pd.DataFrame | None,
    layers: pd.DataFrame | None,
    samples_nonfinite: pd.DataFrame | None = None,
    probes: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """All stability rows (step, name, scope, key, value); missing inputs give fewer rows.
    ``samples_nonfinite`` (step, rows) names the steps whose per-sample values overflowed;
    ``probes``: the PROBES table (gradscope.analysis.probes)."""
    parts = _step_rows(steps) if has_columns(steps, "step") else []
    parts += clip_rows(steps, robust_z) + tensor_spike_rows(layers)  # pre-clip norms (clipping.py)
    parts += warmup_rows(steps)  # the steps before robust_z has MIN_HISTORY values (warmup.py)
    per_layer = layer_sums(layers) if has_columns(layers, "step", "layer") else pd.DataFrame()
    if len(per_layer):
        parts += _layer_rows(per_layer)
    parts.append(_nonfinite_rows(steps, per_layer, samples_nonfinite))
    parts.append(probe_metrics(probes))
    return concat_rows(parts)


def _select(rows: pd.DataFrame, name: str) -> pd.DataFrame:
    return rows[rows["name"] == name].dropna(subset=["value"])


def _depth_findings(relative: pd.Series) -> list[tuple[Level, str, str, float, float, tuple[int, ...]]]:
    """Vanishing / exploding layers from each layer's median grad_norm_rel.

    Both are read against the median layer, so one gradient that decays across depth
    makes the first layers look vanishing AND the last ones exploding. When any layer
    vanishes, the large ones are that same spread, not a second problem: only the
    vanishing layers are reported, the weakest first, with the span in decades.
    """
    vanishing = relative[relative < VANISH].sort_values()
    if len(vanishing):
        decades = np.log10(relative.max() / max(float(vanishing.iloc[0]), EPS))
        return [
            (
                "warn",
                f"vanishing gradients in {layer} (layer norms span {decades:.0f} decades)",
                "grad_norm_rel",
                float(value),
                VANISH,
                (),
            )
            for layer, value in vanishing.items()
        ]
    return [
        ("warn", f"exploding gradients in {layer}", "grad_norm_rel", float(value), EXPLODE, ())
        for layer, value in relative[relative > EXPLODE].items()
    ]


# Which finding heads the verdict: alerts, then the causes before their symptoms (a vanishing
# gradient leaves first layers' updates below float resolution: "frozen").
_PRIORITY = (
    "nonfinite",
    "nonfinite_samples",
    "sharpness_edge_ratio",  # probes (gradscope.analysis.probes): early warnings come first
    "attn_max_logit",
    "attn_entropy_rel",
    "softmax_collapse",
    "loss_spike_z",
    "grad_norm_preclip_spike_z",
    "grad_norm_spike_z",
    "grad_norm_warmup_ratio",
    "tensor_spike_ratio",
    "grad_norm_rel",
    "dead",
    "dead_units",
    "frozen",
    "update_ratio",
)


def _findings(rows: pd.DataFrame) -> list[tuple[Level, str, str, float, float, tuple[int, ...]]]:
    """(level, text, metric, value, threshold, steps) for every rule that fires."""
    found: list[tuple[Level, str, str, float, float, tuple[int, ...]]] = []
    bad = _select(rows, "nonfinite").query("value > 0")
    if len(bad):
        steps = tuple(int(s) for s in bad["step"])
        found.append(("alert", "non-finite loss/gradients", "nonfinite", bad["value"].max(), 0, steps))
    in_backward = _select(rows, "nonfinite_samples")
    if len(in_backward):
        text = (f"inf/NaN per-sample gradients ({int(in_backward['value'].sum())} rows), seen in backward "
                "even where the script zeroed or skipped them before the optimizer step; coherence, "
                "noise and alignment leave those steps out")
        steps = tuple(int(s) for s in in_backward["step"])
        found.append(("alert", text, "nonfinite_samples", float(in_backward["value"].max()), 0, steps))
    preclip = len(_select(rows, "grad_norm_preclip_spike_z")) > 0  # then the pre-clip norm judges
    for name, label in (("loss_spike_z", "loss spikes"), ("grad_norm_spike_z", "grad-norm spikes")):
        if name == "grad_norm_spike_z" and preclip:
            continue
        spikes = _select(rows, name).query(f"value > {SPIKE_Z}")
        if len(spikes):
            steps = tuple(int(s) for s in spikes["step"])
            found.append(("warn", label, name, spikes["value"].max(), SPIKE_Z, steps))
    found += clip_findings(rows, SPIKE_Z) + warmup_findings(rows)
    for name, label in (("dead", "dead layer"), ("frozen", "frozen layer")):
        flagged = _select(rows, name)
        for layer, block in flagged.groupby("key"):
            if len(block) >= 2:
                steps = tuple(int(s) for s in block["step"])
                found.append(("warn", f"{label} {layer}", name, 0.0, 0.0, steps))
    found += _depth_findings(_select(rows, "grad_norm_rel").groupby("key")["value"].median())
    ratios = _select(rows, "update_ratio").groupby("key")["value"].median()
    low, high = UPDATE_RATIO_BAND
    for layer, value in ratios.items():
        if 0 < value < low or value > high:
            limit = low if value < low else high
            text = f"update/weight ratio of {layer} {value:.2g} outside {UPDATE_RATIO.text()}"
            found.append(("warn", text, "update_ratio", value, limit, ()))
    return found + probe_findings(rows)


def _recorded_steps(rows: pd.DataFrame) -> tuple[int, int]:
    """(steps with a loss or grad norm, steps with per-layer rows) in the stability rows."""
    scalar = rows.loc[rows["name"].isin(["loss", "grad_norm"]) & (rows["scope"] == "model"), "step"]
    layer = rows.loc[(rows["name"] == "grad_norm") & (rows["scope"] == "layer"), "step"]
    return scalar.nunique(), layer.nunique()


def _at(steps: tuple[int, ...], total: int) -> str:
    return f" at {step_list(steps, total)}" if steps else ""


def stability_verdict(rows: pd.DataFrame) -> Verdict:
    """alert: any non-finite loss or gradient. warn: a loss or grad-norm spike (robust z > 6
    against the previous 20 steps), a layer with exactly zero gradient (dead) or zero update
    (frozen) on 2+ recorded steps, a layer whose median grad norm is < 1e-3 or > 1e3 times
    the median layer's (Pascanu et al. 2013), or a median update/weight ratio outside
    [1e-5, 1e-1] (two decades around Karpathy's ~1e-3 rule of thumb, as Cockpit's
    update-size instrument). Thresholds: gradscope.analysis.thresholds. A run shorter than
    MIN_HISTORY + 1 steps has no spike scores: the summary says so.
    """
    source = f"robust z > {SPIKE_Z:g}; Pascanu 2013; update ratio {UPDATE_RATIO.text()} (Karpathy)"
    if not len(rows):
        return no_data("stability", NOT_RECORDED, "no loss, gradient norm or per-layer statistics", source)
    scalar_steps, layer_steps = _recorded_steps(rows)
    short = ""
    if scalar_steps < MIN_HISTORY + 1:
        short = f" (spike scores need {MIN_HISTORY + 1} steps; {scalar_steps} recorded)"
    else:
        short = scored_note(rows)
    found = _findings(rows)
    if not found and max(scalar_steps, layer_steps) < MIN_STEPS:
        why = f"{max(scalar_steps, layer_steps)} step recorded; stability needs {MIN_STEPS} or more"
        return no_data("stability", TOO_FEW_STEPS, why, source)
    if not found:
        summary = "no spikes, non-finite values or dead layers" + short
        return Verdict("stability", "ok", summary, source=source)
    found.sort(
        key=lambda f: (f[0] != "alert", _PRIORITY.index(f[2]) if f[2] in _PRIORITY else len(_PRIORITY))
    )
    level, text, name, value, limit, steps = found[0]
    total = layer_steps if name in ("dead", "frozen") else scalar_steps
    details = tuple(
        f"{f[0]}: {f[1]}{_at(f[5], layer_steps if f[2] in ('dead', 'frozen') else scalar_steps)}"
        for f in found
    )
    return Verdict(
        "stability",
        level,
        text + _at(steps, total) + short,
        metric=f"stability.{name}",
        value=float(value),
        threshold=float(limit),
        steps=steps,
        source=SOURCES.get(name, source),
        details=details,
    )


def curvature_reason(verdict: Verdict, meta: Mapping[str, Any]) -> Verdict:
    """The stability verdict of a run recorded with ``--curvature every=N`` whose recorder said
    curvature was not measured (no replayable loss) or failed: the summary and the details
    say so with the recorder's reason; never silence where a measurement was asked for."""
    config = meta.get("config")
    if verdict.family != "stability" or not isinstance(config, Mapping) or not config.get("curvature"):
        return verdict
    notes = [str(f.get("message", "")) for f in meta.get("failures") or []
             if isinstance(f, Mapping) and f.get("component") == "curvature"
             and ("not measured" in str(f.get("message")) or "disabled" in str(f.get("message")))]
    if not notes:
        return verdict
    note = f"curvature was asked for but not measured ({notes[0]})"
    return replace(verdict, summary=f"{verdict.summary}; {note}", details=(*verdict.details, f"note: {note}"))
