"""Static matplotlib figures: ``gradscope report RUN --figures DIR`` (PNG and PDF, for
papers and CI artifacts; gradscope.report.figures) and the compare page's PNGs.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas directly: no
pyplot, no global backend switch, and the style lives in a local ``rc_context`` so
the user's own matplotlib settings are never touched.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd
from cycler import cycler
from matplotlib import rc_context
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from gradscope.analysis.thresholds import CONFLICT_COS, SEVERE_CONFLICT, STRONG_CONFLICT
from gradscope.report import downsample

STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "axes.prop_cycle": cycler(
        color=["#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#0ea5e9", "#ec4899", "#64748b"]
    ),
    "legend.frameon": False,
    "legend.fontsize": 8,
}
ALERT, WARN, OK = "#dc2626", "#d97706", "#16a34a"
MAX_LABELS = 40  # heatmap rows beyond this lose their tick labels
MAX_LINES = 8  # curves per axes beyond this are dropped (the lowest kept)


@contextmanager
def figure(width: float = 6.4, height: float = 3.0) -> Iterator[Figure]:
    """A Figure under the local style; render with ``to_uri``."""
    with rc_context(STYLE):
        fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        yield fig


def to_uri(fig: Figure | None) -> str | None:
    if fig is None:
        return None
    buffer = io.BytesIO()
    with rc_context(STYLE):
        fig.savefig(buffer, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def steps_axis(ax: Axes) -> None:
    """Whole steps only on the x axis (no 0.5 ticks on short runs)."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")


def draw_series(
    ax: Axes, steps: pd.Series, values: pd.Series, label: str | None = None, **style: object
) -> None:
    """A curve; past downsample.LIMIT points the bucket mean with a min..max band around it,
    so a one-step spike keeps its height and a long noisy run is not a solid block."""
    if not downsample.needs_bucketing(len(values)):
        ax.plot(steps, values, label=label, lw=1.4, **style)
        return
    env = downsample.envelope(steps.to_numpy(float), values.to_numpy(float), downsample.LIMIT)
    middle = (env.start + env.stop) / 2
    (line,) = ax.plot(middle, env.mean, label=label, lw=1.2, **style)
    ax.fill_between(middle, env.low, env.high, color=line.get_color(), alpha=0.25, lw=0)


def wide_positive(columns: Sequence[pd.Series]) -> bool:
    """True when every value is > 0 and they span more than a decade (worth a log axis)."""
    values = pd.concat(list(columns)).dropna()
    return bool(len(values) and (values > 0).all() and values.max() > 10 * values.min())


def series(metrics: pd.DataFrame, family: str, name: str, scope: str = "model") -> pd.DataFrame:
    """Rows of one metric (step >= 0), sorted by step; columns step, key, value."""
    rows = metrics[(metrics["family"] == family) & (metrics["name"] == name) & (metrics["scope"] == scope)]
    return rows[rows["step"] >= 0].sort_values("step")[["step", "key", "value"]]


def line_figure(
    lines: Mapping[str, pd.DataFrame],
    title: str,
    *,
    log: bool = False,
    guides: Sequence[tuple[float, str, str]] = (),
    decorate: Callable[[Axes], None] | None = None,
    width: float = 6.4,
) -> Figure | None:
    """Curves (label -> frame with step, value) on one axes; guides are (y, colour, label)."""
    lines = {k: v for k, v in lines.items() if len(v) and np.isfinite(v["value"]).any()}
    if not lines:
        return None
    with figure(width) as fig:
        ax = fig.add_subplot()
        for label, frame in list(lines.items())[:MAX_LINES]:
            draw_series(ax, frame["step"], frame["value"], label)
        for y, colour, label in guides:
            ax.axhline(y, color=colour, ls="--", lw=1, label=label)
        if log and wide_positive([f["value"] for f in lines.values()]):
            ax.set_yscale("log")
        if decorate is not None:
            decorate(ax)
        ax.set_title(title, loc="left")
        steps_axis(ax)
        if len(lines) + len(guides) > 1:
            ax.legend(loc="best")
        return fig


def heatmap(frame: pd.DataFrame, title: str, order: Sequence[str], *, log: bool = True) -> Figure | None:
    """Keys (rows, in ``order``) over steps (columns) from rows step, key, value."""
    if frame.empty or not np.isfinite(frame["value"]).any():
        return None
    grid = frame.pivot_table(index="key", columns="step", values="value", aggfunc="mean")
    rows = [k for k in order if k in grid.index] + sorted(set(grid.index) - set(order))
    grid = grid.loc[rows]
    values = grid.to_numpy(float)
    steps = grid.columns.to_numpy(float)
    if downsample.needs_bucketing(len(steps)):
        starts, stops, values = downsample.column_max(steps, values, downsample.LIMIT)
        steps = np.concatenate([starts[:1], stops[-1:]])
        title += " (max per step bucket)"
    positive = values[np.isfinite(values) & (values > 0)]
    norm = None
    if log and positive.size and positive.min() < positive.max():
        norm = LogNorm(positive.min(), positive.max())
        values = np.where(values > 0, values, np.nan)
    with figure(6.4, max(2.2, 0.9 + 0.18 * min(len(rows), 60))) as fig:
        ax = fig.add_subplot()
        ax.grid(False)
        image = ax.imshow(np.ma.masked_invalid(values),
                          aspect="auto", interpolation="nearest", cmap="viridis", norm=norm,
                          extent=(steps.min() - 0.5, steps.max() + 0.5, len(rows) - 0.5, -0.5))
        if len(rows) <= MAX_LABELS:
            ax.set_yticks(range(len(rows)), [str(r) or "(root)" for r in rows], fontsize=7)
        else:
            ax.set_yticks([])
            ax.set_ylabel(f"{len(rows)} layers, model order")
        steps_axis(ax)
        ax.set_title(title, loc="left")
        fig.colorbar(image, ax=ax, fraction=0.04, pad=0.01)
        return fig


def loss_and_grad(metrics: pd.DataFrame, spike_z: float = 6.0) -> Figure | None:
    """Loss (spikes marked) and global gradient norm (log scale) over steps, side by side."""
    loss = series(metrics, "stability", "loss")
    norm = series(metrics, "stability", "grad_norm")
    if loss.empty and norm.empty:
        return None
    z = series(metrics, "stability", "loss_spike_z").set_index("step")["value"]
    with figure(12.8, 3.0) as fig:
        left, right = fig.subplots(1, 2)
        draw_series(left, loss["step"], loss["value"])
        spikes = loss[loss["step"].map(z).fillna(0) > spike_z]
        left.scatter(spikes["step"], spikes["value"], color=ALERT, zorder=3, label=f"spike (z > {spike_z:g})")
        if len(spikes):
            left.legend()
        left.set_title("loss", loc="left")
        draw_series(right, norm["step"], norm["value"], color="#f59e0b")
        if len(norm) and wide_positive([norm["value"]]):
            right.set_yscale("log")
        right.set_title("global gradient norm", loc="left")
        for ax in (left, right):
            steps_axis(ax)
        return fig


def task_matrix(metrics: pd.DataFrame) -> tuple[list[str], np.ndarray] | None:
    """Mean model-level cosine per task pair as a symmetric K x K matrix (diagonal 1)."""
    pairs = series(metrics, "conflict", "cos", "task_pair")
    if pairs.empty:
        return None
    means = pairs.groupby("key")["value"].mean()
    names: list[str] = []
    for key in means.index:
        for task in str(key).split("|", 1):
            if task not in names:
                names.append(task)
    matrix = np.eye(len(names))
    for key, value in means.items():
        a, b = str(key).split("|", 1)
        i, j = names.index(a), names.index(b)
        matrix[i, j] = matrix[j, i] = value
    return names, matrix


def conflict_heatmap(metrics: pd.DataFrame) -> Figure | None:
    """Task x task mean cosine, red where tasks pull apart (cos < 0), blue where they agree."""
    found = task_matrix(metrics)
    if found is None:
        return None
    names, matrix = found
    with figure(4.6, 3.8) as fig:
        ax = fig.add_subplot()
        ax.grid(False)
        image = ax.imshow(matrix, cmap="RdBu", norm=TwoSlopeNorm(0.0, -1.0, 1.0))
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_yticks(range(len(names)), names)
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center",
                    color="white" if abs(value) > 0.6 else "black", fontsize=8)
        ax.set_title("task gradient cosine (mean over steps)", loc="left")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
        return fig


def conflict_zones(ax: Axes) -> None:
    """GCond's zones: cos < 0 conflict, < -0.5 strong, < -0.8 severe (shaded)."""
    ax.axhspan(STRONG_CONFLICT, CONFLICT_COS, color=WARN, alpha=0.08, lw=0)
    ax.axhspan(SEVERE_CONFLICT, STRONG_CONFLICT, color=ALERT, alpha=0.08, lw=0)
    ax.axhspan(-1.0, SEVERE_CONFLICT, color=ALERT, alpha=0.16, lw=0)
    ax.axhline(CONFLICT_COS, color="#64748b", lw=0.8)
    ax.set_ylim(-1.05, 1.05)


def gwa_distribution(scores: pd.DataFrame, epoch_scores: pd.DataFrame) -> Figure | None:
    """Per-sample head GWA per epoch (violins) with the epoch score (line, right axis)."""
    scores = scores[np.isfinite(scores["gwa"]) & scores["epoch"].notna()]
    if scores.empty:
        return None
    epochs = sorted(scores["epoch"].unique())[-30:]
    data = [scores.loc[scores["epoch"] == e, "gwa"].to_numpy(float) for e in epochs]
    with figure(6.4, 3.0) as fig:
        ax = fig.add_subplot()
        usable = [(e, d) for e, d in zip(epochs, data) if len(d) > 1]
        if usable:
            parts = ax.violinplot([d for _, d in usable], positions=[e for e, _ in usable],
                                  showmedians=True, widths=0.8)
            for body in parts["bodies"]:
                body.set_alpha(0.45)
        ax.axhline(0.0, color="#64748b", lw=0.8)
        ax.set_xticks([int(e) for e in epochs])
        ax.set_xlabel("epoch")
        ax.set_ylabel("cos(-g_i, W), head layer")
        ax.set_title("gradient-weight alignment per epoch", loc="left")
        if len(epoch_scores):
            twin = ax.twinx()
            twin.plot(epoch_scores["epoch"], epoch_scores["value"], color=ALERT, marker="o", lw=1.4)
            twin.set_ylabel("epoch score", color=ALERT)
            twin.grid(False)
        return fig
