"""``gradscope report RUN --figures DIR``: static matplotlib figures of a run, each as PNG
(150 dpi) and PDF (vector), for papers and CI artifacts. A figure whose data the run
lacks is not written (the command lists what it wrote)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
from matplotlib import rc_context
from matplotlib.figure import Figure

from gradscope.analysis.engine import Analysis
from gradscope.analysis.thresholds import M_COHERENCE_MIN, UPDATE_RATIO
from gradscope.errors import GradscopeError
from gradscope.report import hparams, plots
from gradscope.store.reader import Run

FORMATS = ("png", "pdf")


def learning_rate(run: Run) -> Figure | None:
    numbers, _ = hparams.hparam_rows(run.table("steps", ["step", "rank", "optimizer", "hparams"]))
    lr = numbers[numbers["name"] == "lr"]
    lines = {str(g): f[["step", "value"]] for g, f in lr.groupby("group", sort=False)}
    return plots.line_figure(lines, "learning rate (steps.hparams)", log=True)


def builders(run: Run, analysis: Analysis) -> dict[str, Callable[[], Figure | None]]:
    """File stem -> a function drawing that figure (lazily: one figure in memory at a time)."""
    metrics = analysis.metrics
    order = [str(e.get("name", "")) for e in run.meta.get("layers") or [] if isinstance(e, dict)]
    pairs = plots.series(metrics, "conflict", "cos", "task_pair")
    over = pairs if len(pairs) else plots.series(metrics, "conflict", "group_cos", "group_pair")
    epochs = metrics[(metrics["family"] == "alignment") & (metrics["name"] == "epoch_score")]
    epochs = epochs.assign(epoch=pd.to_numeric(epochs["key"], errors="coerce"))
    return {
        "loss-grad-norm": lambda: plots.loss_and_grad(metrics),
        "learning-rate": lambda: learning_rate(run),
        "layers-grad-norm": lambda: plots.heatmap(
            plots.series(metrics, "stability", "grad_norm", "layer"), "per-layer gradient norm", order),
        "layers-update-ratio": lambda: plots.heatmap(
            plots.series(metrics, "stability", "update_ratio", "layer"),
            f"per-layer |ΔW| / |W| (verdict band {UPDATE_RATIO.text()})", order),
        "coherence": lambda: plots.line_figure(
            {n: plots.series(metrics, "coherence", n) for n in ("m_coherence", "stiffness_cos")},
            "m-coherence (1 = orthogonal per-sample gradients)",
            guides=[(M_COHERENCE_MIN, plots.WARN, f"verdict warns below {M_COHERENCE_MIN:g}")]),
        "noise": lambda: plots.line_figure(
            {"B_simple": plots.series(metrics, "noise", "b_simple"),
             "batch size": plots.series(metrics, "noise", "batch_size")},
            "gradient noise scale vs batch size", log=True),
        "conflict-tasks": lambda: plots.conflict_heatmap(metrics),
        "conflict-cosine": lambda: plots.line_figure(
            {str(k): f for k, f in over.groupby("key")}, "pairwise gradient cosine over steps",
            decorate=plots.conflict_zones),
        "alignment-gwa": lambda: plots.gwa_distribution(analysis.head_sample, epochs),
    }


def write_figures(run: Run, analysis: Analysis, directory: Path | str) -> list[Path]:
    """Write every figure the run has data for into ``directory`` (created if missing)."""
    folder = Path(directory)
    written: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for stem, build in builders(run, analysis).items():
            fig = build()
            if fig is None:
                continue
            with rc_context(plots.STYLE):
                for fmt in FORMATS:
                    path = folder / f"{stem}.{fmt}"
                    fig.savefig(path, format=fmt, dpi=150)
                    written.append(path)
    except OSError as err:
        raise GradscopeError(f"cannot write figures to {folder}: {err.strerror or err}") from None
    return written
