"""The terminal layout of ``gradscope compare`` (data: compare.py), in a given width."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence

import pandas as pd
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from gradscope.report.check import STATUS_STYLE, Outcome
from gradscope.report.compare import (
    LAYER_METRICS,
    Compared,
    layer_detail,
    metric_table,
    settings_diff,
    verdict_change,
    verdict_levels,
)
from gradscope.report.layout import Column, abbreviate, folded_table
from gradscope.report.sections import HIDDEN, fmt, verdict_text

CHANGE_STYLE = {"worse": "bold red", "better": "green", "same": "dim", "not comparable": "magenta"}
MAX_LAYERS = 8


def delta_text(value: float) -> Text:
    """A difference with its sign (+0.0812, -1.2e-05); '-' when missing, dim when 0."""
    if value is None or not math.isfinite(value) or value == 0:
        return Text(fmt(value), style="dim")
    return Text(f"{value:+.4g}", style="cyan")


def legend(compared: Sequence[Compared], width: int) -> RenderableType:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold")
    grid.add_column()
    for index, item in enumerate(compared):
        note = "  (baseline: Δ = run - A)" if index == 0 else ""
        grid.add_row(item.label, Text(abbreviate(str(item.run.path), width - 4 - len(note)) + note))
    return grid


def settings_section(compared: Sequence[Compared], width: int) -> RenderableType:
    """The settings that differ, one column per run (values fold, never crop)."""
    diff, same = settings_diff([c.run for c in compared])
    if diff.empty:
        return Text(f"settings: all {same} the same in every run (command, hyperparameters, recording)",
                    style="dim")
    table = Table(title=f"settings that differ ({same} others are the same)", title_justify="left",
                  show_edge=False, header_style="bold", width=min(width, 200))
    table.add_column("setting", no_wrap=True, max_width=max(12, width // 4))
    for item in compared:
        table.add_column(item.label, overflow="fold", ratio=1)
    for setting, row in diff.iterrows():
        table.add_row(str(setting), *(str(v) for v in row))
    return table


def verdicts_section(compared: Sequence[Compared]) -> RenderableType:
    table = Table(title="verdicts (change against A)", title_justify="left", header_style="bold",
                  show_edge=False)
    table.add_column("family", no_wrap=True)
    for item in compared:
        table.add_column(item.label, no_wrap=True)
    for family, levels in verdict_levels([c.analysis for c in compared]):
        cells = [verdict_text(levels[0])]
        for level in levels[1:]:
            change = verdict_change(levels[0], level)
            cell = verdict_text(level)
            if change != "same":
                cell.append(f" ({change})", style=CHANGE_STYLE[change])
            cells.append(cell)
        table.add_row(family, *cells)
    return table


def run_columns(compared: Sequence[Compared], values: Callable[[int], pd.Series],
                deltas: Callable[[int], pd.Series]) -> list[Column]:
    """A's values, then each other run's values and its Δ against A."""
    columns = [Column(compared[0].label, [fmt(v) for v in values(0)])]
    for index, item in enumerate(compared[1:], 1):
        columns.append(Column(item.label, [fmt(v) for v in values(index)]))
        columns.append(Column(f"Δ{item.label}", [delta_text(v) for v in deltas(index)]))
    return columns


def metrics_sections(compared: Sequence[Compared], width: int) -> list[RenderableType]:
    """Model-scope metrics: the last value, then the mean over recorded steps."""
    frame = metric_table([c.analysis for c in compared])
    frame = frame[[name not in HIDDEN for name in frame.index.get_level_values("name")]]
    names = [f"{family}.{name}" for family, name, _ in frame.index]
    titles = {"last": "metrics: last value (model scope)", "mean": "metrics: mean over recorded steps"}
    return [folded_table(titles[stat], "metric", names,
                         run_columns(compared, lambda i, s=stat: frame[(s, i)],
                                     lambda i, s=stat: frame[(f"delta_{s}", i)]), width, keep=1,
                         whole_names=True)
            for stat in ("last", "mean")]


def layer_sections(compared: Sequence[Compared], width: int) -> list[RenderableType]:
    """Per layer, for each layer-scope metric the runs have: mean over steps, layers that
    moved most (relative to A) first."""
    sections = []
    analyses = [c.analysis for c in compared]
    for family, name in LAYER_METRICS:
        detail = layer_detail(analyses, family, name, sys.maxsize)
        if detail.empty:
            continue
        more = len(detail) - MAX_LAYERS
        detail = detail.iloc[:MAX_LAYERS]
        columns = run_columns(compared, lambda i, d=detail: d[i], lambda i, d=detail: d[f"delta_{i}"])
        title = f"{family}.{name} per layer (mean over steps; most changed first)"
        caption = f"… {more} more layers (the {MAX_LAYERS} that moved most are shown)" if more > 0 else ""
        sections.append(folded_table(title, "layer", [str(k) or "(root)" for k in detail.index], columns,
                                     width, keep=1, caption=caption))
    return sections


def comparison_renderables(compared: Sequence[Compared], width: int) -> list[RenderableType]:
    """Settings first, then verdicts, model-scope metrics and per-layer detail."""
    return [legend(compared, width), settings_section(compared, width), verdicts_section(compared),
            *metrics_sections(compared, width), *layer_sections(compared, width)]


def fail_on_table(checked: Sequence[tuple[str, Sequence[Outcome]]], width: int) -> RenderableType:
    """Each --fail-on rule on each run after A: result, value and threshold; then one
    line per rule that did not pass, with its note."""
    rows = [(label, o) for label, outcomes in checked for o in outcomes]
    columns = [
        Column("run", [label for label, _ in rows], "left"),
        Column("result", [Text(o.status, style=STATUS_STYLE[o.status]) for _, o in rows], "left"),
        Column("value", [o.shown for _, o in rows]),
        Column("threshold", [f"{o.rule.op} {o.rule.threshold_text}" for _, o in rows]),
    ]
    notes = [f"{o.status}: {o.rule.text} on {label}" + (f": {o.note}" if o.note else "")
             for label, o in rows if o.status != "pass"]
    return folded_table("--fail-on rules (on every run after A)", "rule", [o.rule.text for _, o in rows],
                        columns, width, caption="\n".join(notes))
