"""``gradscope compare --html``: the report's interactive dashboard (Plotly, one file,
offline) for several runs: the settings that differ and the verdicts first, then one
chart per model-scope metric with one line per run, a learning-rate chart per run, and
the model-scope metrics table. The charts are built by gradscope.report.charts and drawn
by the same page script as ``report --html`` (assets/dashboard.js)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from gradscope.errors import GradscopeError
from gradscope.report import charts, hparams, html, tables
from gradscope.report.compare import Compared, metric_table, settings_diff, verdict_levels
from gradscope.report.interactive import TOOLBAR, chart_grid, payload, script_tags
from gradscope.report.sections import HIDDEN, ordered


def _cells(values: Sequence[object]) -> list[str]:
    return [f"<td>{html.esc(v)}</td>" for v in values]


def metric_charts(compared: Sequence[Compared]) -> list[dict]:
    """One chart per (family, name) with per-step model-scope rows in any run: a trace per run."""
    frames = [c.analysis.metrics for c in compared]
    model = [m[(m["scope"] == "model") & (m["step"] >= 0)] for m in frames]
    found = []
    for family in charts.all_families(pd.concat(frames)):
        names = set().union(*(set(m.loc[m["family"] == family, "name"].astype(str)) for m in model))
        for name in ordered(family, names - HIDDEN):
            traces = []
            for item, rows in zip(compared, model):
                rows = rows[(rows["family"] == family) & (rows["name"] == name)]
                if len(rows):
                    label = f"{item.label} {item.run.name}"
                    traces.append(charts.trace(label, "run", item.label, rows["step"].to_numpy(),
                                               rows["value"].to_numpy(float)))
            chart = _chart(f"{family}.{name}", family, traces)
            if chart is not None:
                found.append(chart)
    return found


def _chart(metric: str, family: str, traces: list[dict]) -> dict | None:
    values = [pd.Series(t["y"], dtype=float).to_numpy() for t in traces]
    if not any(pd.notna(v).any() for v in values):
        return None
    can_log, log = charts.log_scale(values)
    return {"kind": "line", "id": charts.chart_id(metric), "title": metric, "family": family,
            "metric": metric, "log": log, "canLog": can_log, "traces": traces,
            "guides": [{"y": y, "color": c, "label": t} for y, c, t in charts.GUIDES.get(metric, [])],
            "bands": [], "marks": [], "place": family}


def lr_charts(compared: Sequence[Compared]) -> list[dict]:
    """The learning rate of each run (one trace per parameter group)."""
    found = []
    for item in compared:
        numbers, _ = hparams.hparam_rows(item.run.table("steps", ["step", "rank", "optimizer", "hparams"]))
        for chart in charts.hparam_charts(numbers, [n for n in hparams.charted(numbers) if n == "lr"]):
            title = f"learning rate · {item.label} {item.run.name}"
            chart.update(id=f"{chart['id']}-{item.label}", title=title, place="training")
            found.append(chart)
    return found


def settings_block(compared: Sequence[Compared]) -> str:
    labels = [f"{c.label} {c.run.name}" for c in compared]
    diff, same = settings_diff([c.run for c in compared])
    rows = [_cells([k, *row]) for k, row in diff.iterrows()]
    body = tables.table(["setting", *labels], rows, key="settings") if rows else \
        '<p class="empty">no setting differs</p>'
    levels = verdict_levels([c.analysis for c in compared])
    verdicts = [_cells([family, *each]) for family, each in levels]
    return html.section(f"settings that differ ({same} others are the same)", [body], wide=True,
                        anchor="settings") + \
        html.section("verdicts", [tables.table(["family", *labels], verdicts, key="verdicts")], wide=True,
                     anchor="verdicts")


def metrics_block(compared: Sequence[Compared]) -> str:
    frame = metric_table([c.analysis for c in compared])
    headers = ["metric"] + [f"{c.label} {stat}" for stat in ("last", "mean") for c in compared]
    rows = [[f"<td>{html.esc(f'{family}.{name}')}</td>"]
            + [tables.num_cell(frame.loc[(family, name, key), (stat, i)])
               for stat in ("last", "mean") for i in range(len(compared))]
            for family, name, key in frame.index if name not in HIDDEN]
    return html.section("metrics at model scope", [tables.table(headers, rows, key="metrics")], wide=True,
                        anchor="metrics")


def render_compare(compared: Sequence[Compared]) -> str:
    names = " · ".join(f"{c.label} {c.run.name}" for c in compared)
    header = (f"<h1>gradscope compare<small>{html.esc(names)}</small></h1>" + '<dl class="meta">'
              + "".join(f"<dt>{html.esc(c.label)}</dt><dd>{html.esc(c.run.path)}</dd>" for c in compared)
              + "</dl>")
    all_charts = lr_charts(compared) + metric_charts(compared)
    by_place: dict[str, list[tuple[dict, int]]] = {}
    for index, chart in enumerate(all_charts):
        by_place.setdefault(chart["place"], []).append((chart, index))
    body = [settings_block(compared)]
    body += [html.section(place if place != "training" else "learning rate of each run",
                          [chart_grid(items)], wide=True, anchor=f"family-{place}")
             for place, items in by_place.items()]
    body.append(metrics_block(compared))
    title = "gradscope compare: " + " vs ".join(c.run.name for c in compared)
    return html.page(title, header, body, toolbar=TOOLBAR, scripts=script_tags(payload(all_charts, [])))


def write_compare_html(compared: Sequence[Compared], path: Path | str) -> None:
    document = render_compare(compared)
    try:
        Path(path).write_text(document, encoding="utf-8")
    except OSError as err:
        raise GradscopeError(f"cannot write the HTML comparison to {path}: {err.strerror}") from None
