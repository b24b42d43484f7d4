"""``gradscope compare``: two runs side by side (a change's effect on training).

Per family.name at model scope: the last and mean value of each run and their
differences (B - A); verdict changes per family; with --html, the main curves of both
runs overlaid.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from gradscope.analysis.engine import Analysis
from gradscope.analysis.types import FAMILIES, LEVELS, NO_DATA
from gradscope.errors import GradscopeError
from gradscope.report import html, plots
from gradscope.report.sections import fmt, ordered, verdict_text
from gradscope.store.reader import Run

OVERLAYS = (
    ("stability", "loss", "loss", False),
    ("stability", "grad_norm", "global gradient norm", True),
    ("coherence", "m_coherence", "m-coherence", False),
    ("noise", "b_simple", "gradient noise scale B_simple", True),
    ("alignment", "gwa_head", "GWA of the head layer", False),
    ("conflict", "conflict_fraction", "fraction of task pairs in conflict", False),
)


def summarise(metrics: pd.DataFrame) -> pd.DataFrame:
    """last and mean per (family, name) over the model-scope rows, in step order."""
    model = metrics[metrics["scope"] == "model"].sort_values("step")
    grouped = model.groupby(["family", "name"], sort=False)["value"]
    return pd.DataFrame({"last": grouped.last(), "mean": grouped.mean()})


def compare_metrics(a: Analysis, b: Analysis) -> pd.DataFrame:
    """Columns family, name, a_last, a_mean, b_last, b_mean, delta_last, delta_mean."""
    both = summarise(a.metrics).add_prefix("a_").join(summarise(b.metrics).add_prefix("b_"), how="outer")
    both["delta_last"] = both["b_last"] - both["a_last"]
    both["delta_mean"] = both["b_mean"] - both["a_mean"]
    both = both.reset_index()
    rank = {f: i for i, f in enumerate(FAMILIES)}
    position = {
        (f, n): i for f in FAMILIES for i, n in enumerate(ordered(f, both.loc[both["family"] == f, "name"]))
    }
    keys = [(rank.get(f, 99), position.get((f, n), 99)) for f, n in zip(both["family"], both["name"])]
    return both.iloc[sorted(range(len(both)), key=keys.__getitem__)].reset_index(drop=True)


def verdict_changes(a: Analysis, b: Analysis) -> list[tuple[str, str, str, str]]:
    """(family, level A, level B, change) with change better | worse | same, or "not
    comparable" when a side has no data or its analysis failed."""
    levels_a = {v.family: v.level for v in a.verdicts}
    levels_b = {v.family: v.level for v in b.verdicts}
    rows = []
    for family in FAMILIES:
        la, lb = levels_a.get(family, NO_DATA), levels_b.get(family, NO_DATA)
        if la in LEVELS and lb in LEVELS:
            step = LEVELS.index(lb) - LEVELS.index(la)
            change = "worse" if step > 0 else "better" if step < 0 else "same"
        else:  # no data or failed on a side: the two cannot be ranked
            change = "same" if la == lb else "not comparable"
        rows.append((family, la, lb, change))
    return rows


def comparison_renderables(name_a: str, name_b: str, a: Analysis, b: Analysis) -> list[RenderableType]:
    changes = Table(title="verdicts", title_justify="left", header_style="bold", show_edge=False)
    for column in ("family", f"A {name_a}", f"B {name_b}", "change"):
        changes.add_column(column, overflow="fold")
    style = {"worse": "bold red", "better": "green", "same": "dim", "not comparable": "magenta"}
    for family, la, lb, change in verdict_changes(a, b):
        changes.add_row(family, verdict_text(la), verdict_text(lb), Text(change, style=style[change]))
    table = Table(title="metrics at model scope (Δ = B - A)", title_justify="left", header_style="bold",
                  show_edge=False, padding=(0, 1))
    table.add_column("metric", no_wrap=True)
    for column in ("A last", "B last", "Δ last", "A mean", "B mean", "Δ mean"):
        table.add_column(column, justify="right")
    family = None
    for row in compare_metrics(a, b).itertuples(index=False):
        if row.family != family:
            family = row.family
            table.add_row(Text(str(family), style="bold"))
        table.add_row(f"  {row.name}", fmt(row.a_last), fmt(row.b_last), _delta(row.delta_last),
                      fmt(row.a_mean), fmt(row.b_mean), _delta(row.delta_mean))
    return [Group(changes, Text(""), table)]


def _delta(value: float) -> Text:
    if not math.isfinite(value) or value == 0:
        return Text(fmt(value), style="dim")
    return Text(f"{value:+.4g}", style="cyan")


def _overlay_figures(name_a: str, name_b: str, a: Analysis, b: Analysis) -> list[str]:
    figures = []
    for family, name, title, log in OVERLAYS:
        uri = plots.line_plot(
            {f"A {name_a}": plots.series(a.metrics, family, name),
             f"B {name_b}": plots.series(b.metrics, family, name)},
            title, log=log,
        )
        if uri is not None:
            figures.append(html.section(f"{family}: {title}", [html.img(uri, f"{title}, both runs", "")]))
    return figures


def _metrics_table(a: Analysis, b: Analysis) -> str:
    columns = ("metric", "A last", "B last", "Δ last", "A mean", "B mean", "Δ mean")
    head = "".join(f"<th>{c}</th>" for c in columns)
    body = "".join(
        f"<tr><td>{html.esc(r.family)}.{html.esc(r.name)}</td>"
        + "".join(f'<td class="n">{fmt(v)}</td>' for v in (r.a_last, r.b_last, r.delta_last,
                                                           r.a_mean, r.b_mean, r.delta_mean))
        + "</tr>"
        for r in compare_metrics(a, b).itertuples(index=False)
    )
    table = f"<table><tr>{head}</tr>{body}</table>"
    return html.section("Metrics at model scope (Δ = B - A)", [table], wide=True)


def write_compare_html(run_a: Run, a: Analysis, run_b: Run, b: Analysis, path: Path | str) -> None:
    """One self-contained page: both runs' verdicts, overlaid curves, the metrics table."""
    header = (f"<h1>gradscope compare<small>A {html.esc(run_a.name)} · B {html.esc(run_b.name)}</small></h1>"
              f'<dl class="meta"><dt>A</dt><dd>{html.esc(run_a.path)}</dd><dt>B</dt>'
              f"<dd>{html.esc(run_b.path)}</dd></dl>")
    rows = "".join(
        f"<tr><td>{family}</td><td>{html.esc(la)}</td><td>{html.esc(lb)}</td><td>{change}</td></tr>"
        for family, la, lb, change in verdict_changes(a, b)
    )
    verdicts = html.section("Verdicts", ["<table><tr><th>family</th><th>A</th><th>B</th><th>change</th></tr>"
                                         f"{rows}</table>"])
    body = [verdicts, *_overlay_figures(run_a.name, run_b.name, a, b), _metrics_table(a, b)]
    document = html.page(f"gradscope compare: {run_a.name} vs {run_b.name}", header, body)
    try:
        Path(path).write_text(document, encoding="utf-8")
    except OSError as err:
        raise GradscopeError(f"cannot write the HTML comparison to {path}: {err.strerror}") from None
