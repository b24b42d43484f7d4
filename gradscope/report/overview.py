"""Report sections drawn from what the recorder wrote directly (no analysis needed):
run information, loss curve, per-layer table, learning rates, coverage and warnings."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from gradscope.report.coverage import coverage_by_method, layer_coverage
from gradscope.report.layout import Column, folded_table
from gradscope.report.sparkline import sparkline
from gradscope.store.reader import Run


def run_info(run: Run, steps: pd.DataFrame) -> RenderableType:
    meta = run.meta
    status = str(meta.get("status", "?"))
    colour = {"finished": "green", "running": "yellow"}.get(status, "red")
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("run", Text(str(run.path)))
    grid.add_row("status", Text(status, style=colour))
    grid.add_row("command", Text(" ".join(map(str, meta.get("command", [])))))
    grid.add_row("started / ended", Text(f"{meta.get('started')} / {meta.get('ended') or '-'}"))
    grid.add_row("versions", Text(
        f"gradscope {meta.get('gradscope_version')}, torch {meta.get('torch_version', '?')}, "
        f"python {meta.get('python_version')}"
    ))
    config = meta.get("config", {})
    grid.add_row("recording", Text(
        f"profile {config.get('profile')}, every {config.get('every')}, "
        f"sketch {config.get('sketch')}, world size {meta.get('world_size', 1)}"
    ))
    grid.add_row("steps", Text(_step_summary(steps)))
    ranks = sorted(int(r) for r in steps["rank"].unique()) if "rank" in steps and len(steps) else []
    if len(ranks) > 1 or isinstance(meta.get("distributed"), dict):
        grid.add_row("distributed", distributed_summary(meta, steps, ranks))
    return Panel(grid, title="gradscope run", border_style="cyan")


def _step_summary(steps: pd.DataFrame) -> str:
    """Steps counted once: a DDP run's ranks each write a row per step."""
    if steps.empty:
        return "none recorded"
    ranks = steps["rank"].nunique() if "rank" in steps else 1
    if ranks > 1:
        steps = steps[steps["rank"] == steps["rank"].min()]
    count = f"{len(steps)} steps × {ranks} ranks" if ranks > 1 else f"{len(steps)}"
    text = f"{count} ({int(steps['recorded'].sum())} with per-layer statistics"
    skipped = int(steps["skipped"].sum())
    if skipped:
        text += f", {skipped} skipped by the GradScaler"
    step_time = steps["step_time"].median()
    own = steps["recorder_time"].median()
    if math.isfinite(step_time) and step_time > 0:
        text += f"; median step {step_time * 1e3:.1f} ms, recorder {own * 1e3:.2f} ms"
    return text + ")"


def distributed_summary(meta: dict, steps: pd.DataFrame, ranks: list[int]) -> Text:
    """Backend, ranks, the global batch per step (sum over ranks) and what is not covered."""
    card = meta.get("distributed") if isinstance(meta.get("distributed"), dict) else {}
    wrappers = ", ".join(card.get("wrappers") or []) or "no DDP module seen"
    text = Text(f"{wrappers} ({card.get('backend', '?')}), world size {card.get('world_size', len(ranks))}, "
                f"ranks {', '.join(map(str, ranks))}")
    if "batch_size" in steps and len(ranks) > 1:
        sizes = steps.groupby("step")["batch_size"]
        known = sizes.min() > 0
        total, per_rank = sizes.sum()[known], steps[steps["batch_size"] > 0]["batch_size"]
        if len(total):
            text.append(f"; global batch {_range(total)} ({_range(per_rank)} per rank)")
    for note in card.get("not_covered") or []:
        text.append(f"\nnot covered: {note}", style="yellow")
    return text


def _range(values: pd.Series) -> str:
    low, high = int(values.min()), int(values.max())
    return f"{low}" if low == high else f"{low}-{high}"


def loss_curve(steps: pd.DataFrame, width: int = 80) -> RenderableType:
    """The loss per step; a multi-rank run draws one line per rank (their batches differ)."""
    if "rank" in steps and steps["rank"].nunique() > 1:
        lines = [_loss_line(block, width, f"loss rank {rank}  ") for rank, block in steps.groupby("rank")]
        return Group(*lines)
    return _loss_line(steps, width, "loss  ")


def _loss_line(steps: pd.DataFrame, width: int, label: str) -> RenderableType:
    loss = steps.sort_values("step")["loss"].to_numpy(dtype=float)
    finite = loss[np.isfinite(loss)]
    if finite.size == 0:
        return Text("loss: not recorded (no scalar loss was seen)", style="dim")
    stats = f"  first {finite[0]:.4g}  last {finite[-1]:.4g}  min {finite.min():.4g}"
    line = Text(label)
    line.append(sparkline(list(loss), max(8, min(60, width - len(label) - len(stats)))), style="cyan")
    line.append(stats)
    return line


def layer_table(layers: pd.DataFrame, width: int = 80) -> RenderableType:
    """Per layer: gradient, weight and update norms and the update/weight ratio over the
    recorded steps, as "first → last" over "min … max" (layer norms combine parameters);
    folded to ``width`` (layout.py)."""
    if layers.empty:
        return Text("per-layer statistics: none recorded", style="dim")
    if "rank" in layers:  # DDP ranks hold the same weights and all-reduced gradients
        layers = layers[layers["rank"] == layers["rank"].min()]
    frames = [(str(layer) or "(root)", frame.sort_values("step"))
              for layer, frame in layer_norms(layers).groupby("layer", sort=False)]
    headers = {"grad_norm": "grad norm", "weight_norm": "weight norm", "update_norm": "update norm",
               "ratio": "update/weight"}
    columns = [Column(header, [_span(frame[name].to_numpy()) for _, frame in frames])
               for name, header in headers.items()]
    return folded_table("layers (first → last, min … max over recorded steps)", "layer",
                        [name for name, _ in frames], columns, width)


def layer_norms(layers: pd.DataFrame) -> pd.DataFrame:
    """Combine parameter rows into layer rows: sqrt of the sum of squares per (step, layer)."""
    squared = layers[["step", "layer"]].copy()
    for column in ("grad_norm", "weight_norm", "update_norm"):
        squared[column] = layers[column] ** 2
    grouped = squared.groupby(["step", "layer"], sort=False).sum(min_count=1) ** 0.5
    grouped = grouped.reset_index()
    grouped["ratio"] = grouped["update_norm"] / grouped["weight_norm"].where(grouped["weight_norm"] > 0)
    return grouped


def _span(values: np.ndarray) -> Text:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Text("-", style="dim")
    text = Text(f"{finite[0]:.3g} → {finite[-1]:.3g}\n")
    text.append(f"{finite.min():.3g} … {finite.max():.3g}", style="dim")
    return text


def learning_rates(steps: pd.DataFrame, width: int = 80) -> RenderableType:
    series: dict[str, list[float]] = {}
    if "rank" in steps and len(steps):  # every rank steps the same optimizer: once
        steps = steps[steps["rank"] == steps["rank"].min()]
    for text in steps.sort_values("step")["hparams"]:
        for index, group in enumerate(json.loads(text or "[]")):
            lr = group.get("lr")
            if isinstance(lr, (int, float)):
                series.setdefault(f"group {index}", []).append(float(lr))
    if not series:
        return Text("learning rate: no optimizer", style="dim")
    lines = []
    for name, values in series.items():
        stats = f"  first {values[0]:.3g}  last {values[-1]:.3g}"
        if min(values) != max(values):  # a schedule or a burst: its range too
            stats += f"  min {min(values):.3g}  max {max(values):.3g}"
        line = Text(f"lr {name}  ")
        line.append(sparkline(values, max(8, min(40, width - len(line) - len(stats)))), style="magenta")
        line.append(stats)
        lines.append(line)
    return Group(*lines)


def coverage(run: Run) -> RenderableType:
    """Per-sample coverage per method, then every layer without rows or with gaps."""
    layers = layer_coverage(run.meta)
    if not layers:
        return Text("coverage: no layer table in meta.json", style="dim")
    shares = coverage_by_method(layers)
    text = Text("per-sample coverage (share of parameters with recorded rows): ")
    text.append(", ".join(f"{method} {share:.1%}" for method, share in shares.items()))
    for layer in layers:
        if not layer.covered:
            text.append(f"\n  not covered: {layer.name} ({layer.type}, {layer.numel} params): {layer.note}",
                        style="yellow")
        elif "missing:" in layer.note:
            text.append(f"\n  partly covered: {layer.name}: {layer.note}", style="yellow")
    return text


def gap_banner(gap: str) -> RenderableType:
    """The first line of a report on a run with nothing to analyse."""
    return Text(f"NO DATA: {gap}. Every verdict below is 'no data'.", style="bold magenta")


def warnings(run: Run, gap: str = "") -> RenderableType:
    """The recorder's warnings (events.jsonl) and unreadable parts of the run directory.
    With none logged on a run that has no data (``gap``), it does not claim all is well."""
    events = [e for e in run.events() if e.get("level") == "warning"]
    notes = list(run.problems)
    if not events and not notes:
        if gap:
            return Text(f"recorder warnings: none logged, yet the run has no data ({gap})", style="magenta")
        return Text("recorder warnings: none", style="green")
    lines = [Text(f"step {e.get('step', '?')}: {e.get('message')}", style="yellow") for e in events]
    lines += [Text(f"run directory: {note}", style="yellow") for note in notes]
    return Panel(Group(*lines), title="recorder warnings", border_style="yellow")
