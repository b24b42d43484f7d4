"""Chart specifications beyond one-line-per-key (gradscope.report.charts): per-layer
heatmaps over steps, metrics per epoch, the task x task cosine matrix and the per-sample
GWA distribution per epoch. Same dict shape, with a ``kind`` the page's script draws:
"heatmap" (steps on x, shares the step range), "epoch" (epochs on x), "matrix", "violin".
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gradscope.analysis.thresholds import UPDATE_RATIO
from gradscope.report import downsample
from gradscope.report.charts import chart_id, number
from gradscope.report.plots import task_matrix

# Layer metrics drawn as layers x steps heatmaps (log colour), with the band a reader needs.
HEATMAPS = {("stability", "grad_norm"): "per-layer gradient norm",
            ("stability", "update_ratio"): f"per-layer |ΔW| / |W|, band {UPDATE_RATIO.text()}"}
MAX_VIOLIN_EPOCHS = 30


def _empty(kind: str, metric: str, title: str, family: str) -> dict:
    return {"kind": kind, "id": chart_id(metric + ("-" + kind if kind != "line" else "")), "title": title,
            "family": family, "metric": metric, "log": False, "canLog": False, "traces": [], "guides": [],
            "bands": [], "marks": []}


def heatmap(metrics: pd.DataFrame, family: str, name: str, title: str, order: list[str]) -> dict | None:
    """Layers (model order) x steps, the max per step bucket past downsample.LIMIT columns
    (a spike in one layer stays visible); colour on log10 of the positive values."""
    rows = metrics[(metrics["family"] == family) & (metrics["name"] == name) & (metrics["scope"] == "layer")
                   & (metrics["step"] >= 0)]
    if rows.empty or rows["key"].nunique() < 2:
        return None
    grid = rows.pivot_table(index="key", columns="step", values="value", aggfunc="max")
    keys = [k for k in order if k in grid.index] + sorted(set(grid.index) - set(order))
    grid = grid.loc[keys]
    steps = grid.columns.to_numpy(float)
    values = grid.to_numpy(float)
    starts, stops = steps, steps
    if downsample.needs_bucketing(len(steps)):
        starts, stops, values = downsample.column_max(steps, values, downsample.LIMIT)
        title += " (max per step bucket)"
    with np.errstate(divide="ignore", invalid="ignore"):
        logged = np.where(values > 0, np.log10(values), np.nan)
    spec = _empty("heatmap", f"{family}.{name}", title, family)
    spec.update(x=[int(s) for s in starts], x1=[int(s) for s in stops], y=keys,
                z=[[number(v) for v in row] for row in logged],
                raw=[[number(v) for v in row] for row in values])
    return spec


def epoch_charts(metrics: pd.DataFrame) -> list[dict]:
    """Every metric keyed by epoch (whole-run rows, scope "epoch"), epochs on x."""
    rows = metrics[metrics["scope"] == "epoch"]
    out = []
    for (family, name), frame in rows.groupby(["family", "name"], sort=False):
        epochs = pd.to_numeric(frame["key"], errors="coerce")
        frame = frame.assign(epoch=epochs).dropna(subset=["epoch"]).sort_values("epoch")
        if frame.empty:
            continue
        spec = _empty("epoch", f"{family}.{name}", f"{family}.{name} per epoch", str(family))
        spec["traces"] = [{"name": "model", "scope": "epoch", "key": "", "nan": [], "inf": [],
                           "x": [int(e) for e in frame["epoch"]], "y": [number(v) for v in frame["value"]]}]
        out.append(spec)
    return out


def conflict_matrix(metrics: pd.DataFrame) -> dict | None:
    """Mean model-level cosine per task pair as a K x K matrix (diagonal 1)."""
    found = task_matrix(metrics)
    if found is None:
        return None
    names, matrix = found
    spec = _empty("matrix", "conflict.cos", "task x task gradient cosine (mean over steps)", "conflict")
    spec.update(y=names, z=[[number(v) for v in row] for row in matrix])
    return spec


def gwa_violins(head_sample: pd.DataFrame) -> dict | None:
    """The per-sample GWA of the head layer per epoch (a bounded random sample)."""
    scores = head_sample[np.isfinite(head_sample["gwa"]) & head_sample["epoch"].notna()]
    if scores.empty:
        return None
    epochs = sorted(scores["epoch"].unique())[-MAX_VIOLIN_EPOCHS:]
    spec = _empty("violin", "alignment.gwa_head", "per-sample GWA of the head layer per epoch", "alignment")
    spec["groups"] = [{"epoch": int(e), "y": [number(v) for v in scores.loc[scores["epoch"] == e, "gwa"]
                                              if math.isfinite(v)]} for e in epochs]
    return spec
