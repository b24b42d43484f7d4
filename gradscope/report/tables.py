"""Tables of the HTML report: per-key numbers of every (family, scope), flagged samples,
whole-run values, per-layer norms, hyperparameters, coverage.

Every cell from the run goes through ``esc``; numeric cells carry their full value in
``data-v`` so the page's sort uses numbers, not their 4-digit text. Column headers say
which aggregate a cell is ("mean", "last").
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from gradscope.report.coverage import coverage_by_method, layer_coverage
from gradscope.report.overview import layer_norms
from gradscope.report.sections import HIDDEN, SCOPE_TABLES, fmt

SCOPE_TITLES = {"sample": "flagged samples (step:micro:sample)", "epoch": "per epoch", "layer": "per layer",
                "task_pair": "per task pair", "task": "per task", "group_pair": "per group pair",
                "group": "per group"}


def esc(value: object) -> str:
    """HTML-escape anything user-supplied (quotes included)."""
    return html.escape(str(value), quote=True)


def num_cell(value: float) -> str:
    shown = fmt(value)
    data = f"{value:.9g}" if math.isfinite(value) else ""
    return f'<td class="n" data-v="{data}">{esc(shown)}</td>'


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], caption: str = "", key: str = "") -> str:
    """A sortable table; ``rows`` hold finished <td> cells; ``key`` tags it for tests."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(r) + "</tr>" for r in rows)
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (f'<div class="tablebox"><table class="sortable" data-table="{esc(key)}">{cap}'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def scope_table(family: str, scope: str, rows: pd.DataFrame) -> str:
    """Every key of one (family, scope): the primary metric's last and mean, then the mean
    (or the single value) of every other metric, worst rows first as in the terminal."""
    rows = rows[~rows["name"].isin(HIDDEN)]
    names = list(dict.fromkeys(rows["name"]))
    spec = SCOPE_TABLES.get((family, scope))
    if spec is not None and spec.primary in names:
        names.remove(spec.primary)
        names.insert(0, spec.primary)
    stepped = rows[rows["step"] >= 0]
    per_step = stepped.groupby(["name", "key"])["step"].nunique()
    multi = {n for (n, _), c in per_step.items() if c > 1}
    means = rows.groupby(["name", "key"])["value"].mean()
    lasts = rows.sort_values("step").groupby(["name", "key"])["value"].last()
    keys = list(dict.fromkeys(rows["key"]))
    if spec is not None and names and names[0] == spec.primary and spec.ascending is not None:
        ranked = means.xs(spec.primary, level="name")
        ranked = ranked.sort_values(ascending=spec.ascending, na_position="last")
        keys = list(ranked.index) + [k for k in keys if k not in ranked.index]
    headers = [scope]
    for name in names:
        headers += [f"{name} last", f"{name} mean"] if name in multi and name == names[0] else [
            f"{name} mean" if name in multi else name]
    body = []
    for key in keys:
        cells = [f"<td>{esc(key or '(root)')}</td>"]
        for name in names:
            if name in multi and name == names[0]:
                cells.append(num_cell(lasts.get((name, key), math.nan)))
            cells.append(num_cell(means.get((name, key), math.nan)))
        body.append(cells)
    title = SCOPE_TITLES.get(scope, scope)
    return table(headers, body, f"{family}: {title}", key=f"{family}:{scope}")


def whole_run(rows: pd.DataFrame) -> str:
    """Model values that summarise the run (step -1), e.g. alignment.early_stop_epoch."""
    whole = rows[(rows["scope"] == "model") & (rows["step"] < 0)]
    if whole.empty:
        return ""
    items = " · ".join(f"{esc(n)} = {esc(fmt(v))}" for n, v in zip(whole["name"], whole["value"]))
    return f'<p class="whole">whole run: {items}</p>'


def layer_norm_table(layers: pd.DataFrame, order: Sequence[str]) -> str:
    """Per layer (parameters combined): gradient, weight and update norms and their ratio,
    each as first, last, min and max over the recorded steps."""
    if layers.empty:
        return '<p class="empty">per-layer statistics: none recorded</p>'
    per_layer = layer_norms(layers)
    columns = (("grad_norm", "grad norm"), ("weight_norm", "weight norm"), ("update_norm", "update norm"),
               ("ratio", "update/weight"))
    aggregates = ("first", "last", "min", "max")
    headers = ["layer"] + [f"{label} {agg}" for _, label in columns for agg in aggregates]
    known = [k for k in order if k in set(per_layer["layer"])]
    names = known + sorted(set(per_layer["layer"]) - set(known))
    body = []
    for layer in names:
        frame = per_layer[per_layer["layer"] == layer].sort_values("step")
        cells = [f"<td>{esc(layer or '(root)')}</td>"]
        for column, _ in columns:
            values = frame[column].to_numpy(float)
            finite = values[np.isfinite(values)]
            stats = (finite[0], finite[-1], finite.min(), finite.max()) if finite.size else (math.nan,) * 4
            cells += [num_cell(float(v)) for v in stats]
        body.append(cells)
    return table(headers, body, "per-layer norms over the recorded steps (parameters combined)", key="layers")


def hparam_table(rows: Sequence[tuple[str, str, str, str, str, int]]) -> str:
    if not rows:
        return '<p class="empty">no optimizer hyperparameters recorded</p>'
    body = [[f"<td>{esc(g)}</td>", f"<td>{esc(n)}</td>", f'<td class="n">{esc(a)}</td>',
             f'<td class="n">{esc(b)}</td>', f"<td>{esc(c)}</td>", num_cell(float(d))]
            for g, n, a, b, c, d in rows]
    return table(["group", "hyperparameter", "first", "last", "changed at steps", "distinct values"], body,
                 "optimizer hyperparameters (steps.hparams)", key="hparams")


def coverage_table(meta: dict) -> str:
    """Per layer: whether per-sample rows were recorded, and at how many steps (meta.json)."""
    rows = [[f"<td>{esc(c.name or '(root)')}</td>", f"<td>{esc(c.type)}</td>", num_cell(float(c.numel)),
             f"<td>{esc(c.method)}</td>",
             f"<td>{esc(('yes' if c.covered else 'no') + (': ' + c.note if c.note else ''))}</td>"]
            for c in layer_coverage(meta)]
    if not rows:
        return '<p class="empty">no layer table in meta.json</p>'
    shares = coverage_by_method(layer_coverage(meta))
    line = ", ".join(f"{method} {share:.1%}" for method, share in shares.items())
    summary = f'<p class="lede">per-sample coverage (share of parameters with recorded rows): {esc(line)}</p>'
    return summary + table(["layer", "type", "params", "method", "per-sample rows"], rows, key="coverage")
