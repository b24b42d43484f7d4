"""Chart specifications for the interactive HTML report, built from the metrics table.

Nothing here names a metric it must find: every (family, name) with per-step rows gets a
chart, with a trace for the model scope and one per key of every other per-step scope
(layers, task pairs, groups...), so a metric the engine adds later appears without a
change here. ``GUIDES`` only adds reference lines to metrics that have a cited threshold.

A chart is a plain dict (it goes to the page as JSON): id, title, family, metric, log
(the default y scale), traces, guides, bands, marks. A trace is name, scope, key and
either the raw points (x, y) or, past ``downsample.LIMIT`` points, one point per bucket:
x = first step of the bucket, y = mean, lo / hi = min / max, x1 = last step
(see gradscope.report.downsample). The nans between recorded steps (``record --every
N``: gradscope.report.cadence) are dropped before that, and ``every`` says N; other
non-finite values are null (a gap), and ``nan`` / ``inf`` list the steps that held one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from gradscope.analysis.thresholds import (
    CONFLICT_COS,
    M_COHERENCE_MIN,
    SEVERE_CONFLICT,
    SPIKE_Z,
    STRONG_CONFLICT,
    UPDATE_RATIO,
)
from gradscope.analysis.types import FAMILIES, Verdict
from gradscope.report import cadence, downsample
from gradscope.report.sections import ordered

WARN, ALERT, MUTE = "#d97706", "#dc2626", "#64748b"
MAX_MARKS = 60
LAYER_BUDGET = 1_500_000  # numbers in all per-layer curves of a page (~12 MB of JSON at most)
MIN_LAYER_POINTS = 100
ONE_VALUE_SCOPES = {"sample", "epoch"}  # keyed by something other than a step: tables, not charts
GUIDES: dict[str, list[tuple[float, str, str]]] = {
    "coherence.m_coherence": [(M_COHERENCE_MIN, WARN, f"verdict warns below {M_COHERENCE_MIN:g}"),
                              (1.0, MUTE, "1 = orthogonal per-sample gradients")],
    "stability.loss_spike_z": [(SPIKE_Z, WARN, f"spike: z > {SPIKE_Z:g}")],
    "stability.grad_norm_spike_z": [(SPIKE_Z, WARN, f"spike: z > {SPIKE_Z:g}")],
    "stability.update_ratio": [(UPDATE_RATIO.low, WARN, f"band {UPDATE_RATIO.text()}"),
                               (UPDATE_RATIO.high, WARN, ""), (UPDATE_RATIO.centre, MUTE, "")],
    "conflict.cos": [(CONFLICT_COS, MUTE, "conflict: cos < 0 (PCGrad)")],
}
BANDS: dict[str, list[tuple[float, float, str]]] = {  # GCond's strong and severe conflict zones
    "conflict.cos": [(SEVERE_CONFLICT, STRONG_CONFLICT, WARN), (-1.0, SEVERE_CONFLICT, ALERT)],
    "conflict.group_cos": [(SEVERE_CONFLICT, STRONG_CONFLICT, WARN), (-1.0, SEVERE_CONFLICT, ALERT)],
}


def chart_id(metric: str) -> str:
    """The element id of a metric's chart ("stability.grad_norm" -> "chart-stability-grad_norm")."""
    return "chart-" + "".join(c if c.isalnum() or c == "_" else "-" for c in metric)


def number(value: float) -> float | None:
    """JSON-safe and compact: 7 significant digits, None for nan / inf."""
    return float(f"{value:.7g}") if math.isfinite(value) else None


def trace(name: str, scope: str, key: str, steps: np.ndarray, values: np.ndarray,
          limit: int = downsample.LIMIT) -> dict:
    """One curve, bucketed past ``limit`` points."""
    order = np.argsort(steps, kind="stable")
    steps, values = np.asarray(steps, float)[order], np.asarray(values, float)[order]
    steps, values, every = cadence.recorded(steps, values)  # nan between recorded steps: not drawn
    out: dict = {"name": name, "scope": scope, "key": key, "every": every,
                 "nan": [int(s) for s in steps[np.isnan(values)]],
                 "inf": [int(s) for s in steps[np.isinf(values)]]}
    if not downsample.needs_bucketing(len(steps), limit):
        out.update(x=[int(s) for s in steps], y=[number(v) for v in values])
        return out
    env = downsample.envelope(steps, values, limit)
    out.update(x=[int(s) for s in env.start], x1=[int(s) for s in env.stop],
               y=[number(v) for v in env.mean], lo=[number(v) for v in env.low],
               hi=[number(v) for v in env.high])
    return out


def log_scale(values: Iterable[np.ndarray]) -> tuple[bool, bool]:
    """(log possible: some finite value > 0; log by default: the positive values span more
    than 2 decades and none is negative, zeros only as whole curves (a dead layer), which a
    log axis leaves out)."""
    arrays = [v[np.isfinite(v)] for v in values]
    finite = np.concatenate(arrays or [np.array([])])
    positive = finite[finite > 0]
    if positive.size == 0:
        return False, False
    clean = all((a > 0).all() or (a == 0).all() for a in arrays)
    return True, bool(clean and positive.max() > 100 * positive.min())


def layer_limit(metrics: pd.DataFrame) -> int:
    """Points per layer curve: downsample.LIMIT until the page's layer curves together
    would pass LAYER_BUDGET numbers (a bucket is 5), then fewer, never under MIN_LAYER_POINTS.
    A 75-layer transformer with ~19 per-layer metrics gets ~200 buckets per layer curve;
    the model curves keep the full LIMIT."""
    layers = metrics[(metrics["scope"] == "layer") & (metrics["step"] >= 0)]
    curves = len(layers.groupby(["family", "name", "key"]).size()) if len(layers) else 0
    if curves == 0:
        return downsample.LIMIT
    return int(min(downsample.LIMIT, max(MIN_LAYER_POINTS, LAYER_BUDGET // (5 * curves))))


def metric_chart(family: str, name: str, rows: pd.DataFrame, title: str = "",
                 layer_points: int = downsample.LIMIT) -> dict | None:
    """A chart of one metric: the model trace first, then every key of the other scopes."""
    rows = rows[(rows["step"] >= 0) & ~rows["scope"].isin(ONE_VALUE_SCOPES)]
    if not np.isfinite(rows["value"].to_numpy(float)).any():
        return None  # nothing to draw (the scope tables show "-")
    traces, arrays = [], []
    for (scope, key), frame in rows.groupby(["scope", "key"], sort=False):
        values = frame["value"].to_numpy(float)
        label = "model" if scope == "model" else f"{key or '(root)'}"
        limit = layer_points if scope == "layer" else downsample.LIMIT
        traces.append(trace(label, str(scope), str(key), frame["step"].to_numpy(), values, limit))
        arrays.append(values)
    traces.sort(key=lambda t: t["scope"] != "model")
    metric = f"{family}.{name}"
    can_log, log = log_scale(arrays)
    return {
        "kind": "line", "id": chart_id(metric), "title": title or metric, "family": family, "metric": metric,
        "log": log, "canLog": can_log, "traces": traces,
        "guides": [{"y": y, "color": c, "label": t} for y, c, t in GUIDES.get(metric, [])],
        "bands": [{"y0": a, "y1": b, "color": c} for a, b, c in BANDS.get(metric, [])],
        "marks": [],
    }


def family_charts(metrics: pd.DataFrame, family: str) -> list[dict]:
    """Every per-step metric of a family, in the terminal report's order (hidden ones last
    are left out as there: raw variants of a shown metric)."""
    rows = metrics[(metrics["family"] == family) & (metrics["step"] >= 0)]
    rows = rows[~rows["scope"].isin(ONE_VALUE_SCOPES)]
    charts = []
    points = layer_limit(metrics)
    for name in ordered(family, rows["name"].unique()):
        chart = metric_chart(family, name, rows[rows["name"] == name], layer_points=points)
        if chart is not None:
            charts.append(chart)
    return charts


def all_families(metrics: pd.DataFrame) -> list[str]:
    """FAMILIES first, then any family another part of gradscope adds to the table."""
    present = [str(f) for f in metrics["family"].unique()]
    return list(FAMILIES) + sorted(set(present) - set(FAMILIES))


def evidence_chart(charts: list[dict], metric: str) -> dict | None:
    """The first line (or per-epoch) chart of ``metric``: where a verdict on it links."""
    return next((c for c in charts if c["metric"] == metric and c["kind"] in ("line", "epoch")), None)


def mark_evidence(charts: list[dict], verdict: Verdict) -> bool:
    """Put a verdict's evidence on its metric's chart: its steps as marks on the first
    trace, its threshold as a guide. False when no chart shows that metric."""
    chart = evidence_chart(charts, verdict.metric)
    if chart is None or not chart["traces"]:
        return False
    if math.isfinite(verdict.threshold):
        same = next((g for g in chart["guides"] if math.isclose(g["y"], verdict.threshold)), None)
        label = f"verdict threshold {verdict.threshold:.4g}"
        if same is not None:
            same["label"] = f"{same['label']}; {label}" if same["label"] else label
        else:
            colour = ALERT if verdict.level == "alert" else WARN
            chart["guides"].append({"y": verdict.threshold, "color": colour, "label": label})
    if verdict.level in ("warn", "alert"):
        colour = ALERT if verdict.level == "alert" else WARN
        mark(chart, verdict.steps, f"{verdict.family}: {verdict.level}", colour)
    chart["verdict"] = verdict.level
    return True


def mark(chart: dict, steps: Iterable[int], label: str, colour: str) -> None:
    """Circle ``steps`` on the chart's first trace (not bucketed ones: a mark must sit on
    its step); more than MAX_MARKS steps are not marked one by one (the guide says it)."""
    first = chart["traces"][0]
    if "lo" in first:
        return
    lookup = dict(zip(first["x"], first["y"]))
    steps = [s for s in steps if lookup.get(s) is not None]
    if 0 < len(steps) <= MAX_MARKS:
        chart["marks"].append({"x": steps, "y": [lookup[s] for s in steps], "color": colour,
                               "label": f"{label} ({first['name']})"})


def mark_spikes(found: list[dict], metrics: pd.DataFrame) -> None:
    """On the chart of X, circle the steps where X_spike_z (stability) exceeds SPIKE_Z."""
    for chart in found:
        z = metrics[(metrics["name"] == chart["metric"].split(".", 1)[1] + "_spike_z")
                    & (metrics["family"] == chart["family"]) & (metrics["scope"] == "model")]
        steps = z.loc[z["value"] > SPIKE_Z, "step"].astype(int).tolist()
        if steps and chart["traces"]:
            mark(chart, steps, f"spike (z > {SPIKE_Z:g})", WARN)


def hparam_charts(numbers: pd.DataFrame, names: list[str]) -> list[dict]:
    """One chart per changing hyperparameter (lr first), one trace per parameter group."""
    charts = []
    for name in names:
        rows = numbers[numbers["name"] == name]
        traces, arrays = [], []
        for label, frame in rows.groupby("group", sort=False):
            values = frame["value"].to_numpy(float)
            traces.append(trace(str(label), "hparam", str(label), frame["step"].to_numpy(), values))
            arrays.append(values)
        can_log, log = log_scale(arrays)
        title = "learning rate" if name == "lr" else name
        charts.append({"kind": "line", "id": chart_id(f"optimizer.{name}"), "title": title,
                       "family": "optimizer", "metric": f"optimizer.{name}", "log": log, "canLog": can_log,
                       "traces": traces, "guides": [], "bands": [], "marks": []})
    return charts
