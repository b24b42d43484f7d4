"""Terminal report sections drawn from the analysis: the verdict overview, then one
section per metric family (curves as sparklines, small per-key tables).

Every function returns a rich renderable; terminal.py composes them. Metric names are
not hard-wired beyond a preferred order: a metric the engine adds later still shows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from gradscope.analysis.types import FAMILIES, Verdict
from gradscope.report.layout import Column, folded_table
from gradscope.report.sparkline import sparkline

LEVEL_STYLE = {"ok": "green", "warn": "yellow", "alert": "bold red", "no data": "magenta",
               "failed": "bold red"}
LEVEL_MARK = {"ok": "✓ ok", "warn": "▲ warn", "alert": "✖ alert", "no data": "∅ no data",
              "failed": "✖ failed"}

# Model-scope curves per family, in the order a reader wants them (others follow).
CURVES: dict[str, tuple[str, ...]] = {
    "conflict": ("conflict_fraction", "mgda_norm", "sample_cos"),
    "coherence": ("m_coherence", "alpha", "gradient_diversity", "stiffness_cos", "micro_distance"),
    "alignment": ("gwa_head", "gwa", "loss_p50", "learned_fraction", "forgetting_events"),
    "noise": ("b_simple", "batch_size", "norm_test", "inner_product_test", "orthogonality_test"),
    "stability": ("loss", "loss_spike_z", "grad_norm", "grad_norm_spike_z", "init_distance", "nonfinite"),
}
HIDDEN = {"b_simple_raw", "alpha_unbiased", "stiffness_sign", "grad_norm_max_ratio", "loss_flip_rate",
          "masked_nonfinite", "nonfinite_samples"}
MAX_CURVES = 6
# Instability probes (docs/probes.md) shown on one line under the stability curves.
PROBE_LINE = ("attn_max_logit", "attn_entropy_rel", "softmax_collapse", "nlm_cos", "dead_units",
              "act_max_abs", "sharpness_edge_ratio")
MAX_ROWS = 8


@dataclass(frozen=True)
class ScopeTable:
    """How one (family, scope) block is tabulated: the metric whose trend is drawn and
    that orders the rows (ascending: worst first when low is bad), plus other columns."""

    title: str
    primary: str
    ascending: bool | None  # None: rows in key order
    others: tuple[str, ...] = ()


SCOPE_TABLES: dict[tuple[str, str], ScopeTable] = {
    ("conflict", "task_pair"): ScopeTable(
        "task pairs", "cos", True, ("magnitude_similarity", "conflict_fraction", "cos_trend")
    ),
    ("conflict", "group_pair"): ScopeTable("sample groups", "group_cos", True, ("group_cos_batch",)),
    ("conflict", "layer"): ScopeTable("per-layer conflict (layer@pair)", "cos", True),
    ("conflict", "task"): ScopeTable("MGDA weights", "mgda_weight", False),
    ("conflict", "sample"): ScopeTable("most conflicted samples (step:micro:sample)", "sample_cos", True),
    ("coherence", "layer"): ScopeTable(
        "layers", "m_coherence", True, ("gradient_diversity", "stiffness_cos")
    ),
    ("coherence", "group_pair"): ScopeTable("group stiffness", "stiffness_cos", True),
    ("alignment", "layer"): ScopeTable("layers", "gwa", True),
    ("alignment", "epoch"): ScopeTable("epochs", "epoch_score", None),
    ("alignment", "sample"): ScopeTable(
        "most misaligned samples (step:micro:sample #dataset index)", "misaligned", True
    ),
    ("alignment", "index"): ScopeTable(
        "flagged samples (dataset index): never learned, most forgotten", "flagged", True,
        ("forgetting_events", "first_learned", "mean_loss"),
    ),
    ("noise", "layer"): ScopeTable("layers", "b_simple", False, ("gsnr", "gsnr_se", "norm_test")),
    ("stability", "layer"): ScopeTable(
        "layers", "update_ratio", False,
        ("grad_norm", "grad_norm_rel", "init_distance", "dead", "frozen", "dead_units", "attn_max_logit"),
    ),
}


def fmt(value: float) -> str:
    """A number in 4 significant digits; '-' when missing."""
    return "-" if value is None or not math.isfinite(value) else f"{value:.4g}"


def verdict_text(level: str) -> Text:
    return Text(LEVEL_MARK.get(level, level), style=LEVEL_STYLE.get(level, ""))


def evidence(verdict: Verdict) -> Text:
    """The summary, then the deciding metric against its threshold and the source, dim."""
    text = Text(verdict.summary)
    if verdict.metric:
        text.append(f"  {verdict.metric} {fmt(verdict.value)} vs {fmt(verdict.threshold)}", style="dim")
    if verdict.source:
        text.append(f"  [{verdict.source}]", style="dim italic")
    return text


def verdict_overview(verdicts: Sequence[Verdict]) -> RenderableType:
    """One row per family: family, coloured verdict, the evidence in one line."""
    table = Table(title="verdicts", title_justify="left", header_style="bold", show_edge=False,
                  expand=True)
    table.add_column("family", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("evidence", ratio=1)
    for verdict in verdicts:
        table.add_row(verdict.family, verdict_text(verdict.level), evidence(verdict))
    return table


def curves(family: str, rows: pd.DataFrame, width: int = 76) -> RenderableType | None:
    """Model-scope per-step metrics as sparklines with first, last, min and max; the
    sparkline takes what the names and the four numbers (10 characters each) leave."""
    model = rows[(rows["scope"] == "model") & (rows["step"] >= 0)]
    names = ordered(family, model["name"].unique())[:MAX_CURVES]
    if not names:
        return None
    spark = max(8, min(40, width - max(len(n) for n in names) - 4 * 11 - 2))
    grid = Table.grid(padding=(0, 1))
    for justify in ("left", "left", "right", "right", "right", "right"):
        grid.add_column(justify=justify)  # type: ignore[arg-type]
    grid.add_row(*(Text(h, style="dim") for h in ("", "", "first", "last", "min", "max")))
    for name in names:
        values = model[model["name"] == name].sort_values("step")["value"].to_numpy(float)
        finite = values[np.isfinite(values)]
        stats = (finite[0], finite[-1], finite.min(), finite.max()) if finite.size else (math.nan,) * 4
        grid.add_row(Text(name, style="bold"), Text(sparkline(list(values), spark), style="cyan"),
                     *(fmt(v) for v in stats))
    return grid


def ordered(family: str, names: Iterable[str]) -> list[str]:
    """Preferred names first (CURVES order), then the rest alphabetically; HIDDEN dropped."""
    present = {str(n) for n in names} - HIDDEN
    preferred = [n for n in CURVES.get(family, ()) if n in present]
    return preferred + sorted(present - set(preferred))


def run_values(rows: pd.DataFrame) -> RenderableType | None:
    """Whole-run model values (step -1), e.g. alignment.early_stop_epoch, on one line."""
    whole = rows[(rows["scope"] == "model") & (rows["step"] < 0)]
    if whole.empty:
        return None
    text = Text("whole run: ", style="dim")
    text.append("  ".join(f"{n} = {fmt(v)}" for n, v in zip(whole["name"], whole["value"])))
    return text


def probe_values(family: str, rows: pd.DataFrame) -> RenderableType | None:
    """The instability probes' model values on one line: last / max over steps."""
    if family != "stability":
        return None
    model = rows[(rows["scope"] == "model") & rows["name"].isin(PROBE_LINE)]
    shown = []
    for name in PROBE_LINE:
        values = model[model["name"] == name].sort_values("step")["value"].to_numpy(float)
        finite = values[np.isfinite(values)]
        if finite.size:
            shown.append(f"{name} {fmt(finite[-1])} / {fmt(finite.max())}")
    return Text("probes (last / max): " + "  ".join(shown), style="dim") if shown else None


def scope_table(family: str, scope: str, rows: pd.DataFrame, width: int = 76) -> RenderableType | None:
    """Per key (layer, task pair, epoch...): the primary metric's trend, last and mean,
    then the mean of the other metrics; worst rows first, at most MAX_ROWS. Whole-run
    values (step -1: epochs, worst samples) get one value column instead of a trend.
    Folded to ``width`` (layout.py): long keys lose their middle, columns continue below."""
    spec = SCOPE_TABLES.get((family, scope))
    block = rows[rows["scope"] == scope]
    if spec is None or block.empty or spec.primary not in set(block["name"]):
        return None
    primary = block[block["name"] == spec.primary].sort_values("step")
    series = primary.groupby("key", sort=False)["value"]
    means = series.mean()
    order = _row_order(means, spec.ascending)
    shown = order[:MAX_ROWS]
    per_step = bool(series.size().max() > 1)  # else one value per key (epochs, samples)
    averages = block.groupby(["name", "key"])["value"].mean()
    others = [n for n in spec.others if n in set(block["name"])]
    columns = [Column(spec.primary, [fmt(means[k]) for k in shown])]
    if per_step:
        spark = max(8, min(20, width // 5))
        values = {k: series.get_group(k).to_numpy(float) for k in shown}
        columns = [
            Column(f"{spec.primary} over steps", [Text(sparkline(list(values[k]), spark), style="cyan")
                                                  for k in shown], "left"),
            Column("last", [fmt(_last_finite(values[k])) for k in shown]),
            Column("mean", [fmt(means[k]) for k in shown]),
        ]
    columns += [Column(f"mean {name}", [fmt(averages.get((name, k), math.nan)) for k in shown])
                for name in others]  # labelled: a mean over the recorded steps, not a last value
    caption = f"… {len(order) - MAX_ROWS} more (gradscope metrics RUN --family {family})" \
        if len(order) > MAX_ROWS else ""
    keys = [str(k) or "(root)" for k in shown]
    return folded_table(spec.title, scope, keys, columns, width, caption=caption)


def _last_finite(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite[-1]) if finite.size else math.nan


def _row_order(means: pd.Series, ascending: bool | None) -> list[str]:
    if ascending is None:
        return sorted(means.index, key=lambda k: (len(str(k)), str(k)))  # "2" before "10"
    return list(means.sort_values(ascending=ascending, na_position="last").index)


def family_section(family: str, metrics: pd.DataFrame, verdict: Verdict | None,
                   width: int = 80) -> RenderableType:
    """A panel with the family's verdict and details, its curves, then its per-key tables,
    laid out for ``width`` columns (the panel's border and padding take 4)."""
    inner = width - 4
    rows = metrics[metrics["family"] == family]
    level = verdict.level if verdict else "ok"
    parts: list[RenderableType] = []
    if verdict is not None:
        parts.append(Text.assemble(verdict_text(verdict.level), "  ", evidence(verdict)))
        parts += [Text(f"  · {line}", style="dim") for line in verdict.details[:6]]
        if len(verdict.details) > 6:
            parts.append(Text(f"  · ... and {len(verdict.details) - 6} more findings", style="dim"))
    if rows.empty and (verdict is None or verdict.judged):
        parts.append(Text("no metrics: the run did not record what this family needs", style="dim"))
    for part in (curves(family, rows, inner), run_values(rows), probe_values(family, rows)):
        if part is not None:
            parts.append(part)
    for scope in sorted(set(rows["scope"]) - {"model"}):
        table = scope_table(family, scope, rows, inner)
        if table is not None:
            parts.append(table)
    border = LEVEL_STYLE.get(level, "white").replace("bold ", "")
    return Panel(Group(*parts), title=f"[bold]{family}[/bold]", title_align="left", border_style=border)


def family_sections(metrics: pd.DataFrame, verdicts: Sequence[Verdict],
                    width: int = 80) -> list[RenderableType]:
    by_family = {v.family: v for v in verdicts}
    return [family_section(f, metrics, by_family.get(f), width) for f in FAMILIES]
