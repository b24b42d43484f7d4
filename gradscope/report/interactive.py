"""The interactive HTML report: one self-contained file with every time series as a Plotly
chart (zoom, pan, hover), a shared step range, log / linear per chart, a layer picker,
smoothing, the verdicts linked to the chart of their evidence, and sortable tables.

Plotly.js (MIT) is inlined from the ``plotly`` Python package, so the page works offline;
docs/report.md says why Plotly and what it costs (about 4.8 MB per file). The charts'
data travels as one JSON block (``<script type="application/json">``, with <, > and &
escaped so no run name can close the element); the page's script reads it and builds
the charts; names reach the DOM through textContent only.
"""

from __future__ import annotations

import json
from importlib import resources

import pandas as pd

from gradscope.analysis.engine import Analysis
from gradscope.analysis.text import step_list
from gradscope.analysis.types import Verdict
from gradscope.report import charts, hparams, tables, views
from gradscope.report.html import esc, level_class, page, section
from gradscope.store.reader import Run

TRAINING = ("stability.loss", "stability.grad_norm")  # shown first, next to the learning rate
LOG_BUTTON = '<button class="log" type="button">log</button>'
DEFAULT_LAYERS = 6  # layers drawn before the reader picks others: the largest (top_layers)
RANKED_BY = ("update_ratio", "grad_norm")


def figure(chart: dict, index: int) -> str:
    """The frame the page's script draws a chart into, with its log / linear button and
    a note of the steps whose values were not finite (drawn as gaps)."""
    note = ""
    every = max((t.get("every", 1) for t in chart["traces"]), default=1)
    if every > 1:
        note += f'<p class="nan">recorded every {every} steps (the steps between have no value)</p>'
    for kind, css, text in (("inf", "bad", "inf (not drawn) at"), ("nan", "nan", "no value (nan) at")):
        steps = sorted({s for t in chart["traces"] for s in t[kind]})
        if steps:
            note += f'<p class="{css}">{esc(text)} {esc(step_list(steps))}</p>'
    badge = f' <span class="badge {esc(level_class(chart["verdict"]))}">{esc(chart["verdict"])}</span>' \
        if chart.get("verdict") in ("warn", "alert") else ""
    return (f'<figure class="chart" id="{esc(chart["id"])}" data-index="{index}">'
            f'<figcaption><span class="ct">{esc(chart["title"])}</span>{badge}'
            f'{LOG_BUTTON if chart["kind"] in ("line", "epoch") else ""}</figcaption>'
            f'<div class="plot"></div>{note}</figure>')


def chart_grid(items: list[tuple[dict, int]]) -> str:
    if not items:
        return ""
    return '<div class="grid">' + "".join(figure(c, i) for c, i in items) + "</div>"


def top_layers(metrics: pd.DataFrame, names: list[str], count: int = DEFAULT_LAYERS) -> list[str]:
    """The layers drawn before the reader picks others: the ``count`` with the largest mean
    update / weight ratio (else gradient norm), in model order; the first ones when neither
    was measured."""
    for metric in RANKED_BY:
        rows = metrics[(metrics["family"] == "stability") & (metrics["name"] == metric)
                       & (metrics["scope"] == "layer") & metrics["key"].isin(names)]
        means = rows.groupby("key")["value"].mean().dropna()
        if len(means):
            chosen = set(means.sort_values(ascending=False, kind="stable").index[:count])
            return [n for n in names if n in chosen]
    return names[:count]


def payload(all_charts: list[dict], layer_names: list[str], shown: list[str] | None = None) -> str:
    """The JSON block the page's script reads, safe inside <script>; ``shown``: the layers
    drawn at first (default: the first DEFAULT_LAYERS)."""
    steps = [x for c in all_charts if c["kind"] in ("line", "heatmap")
             for t in c["traces"] + ([c] if c["kind"] == "heatmap" else [])
             for x in (t["x"][:1] + t.get("x1", t["x"])[-1:])]
    first = layer_names[:DEFAULT_LAYERS] if shown is None else shown
    data = {"charts": all_charts, "layers": layer_names, "defaultLayers": first,
            "steps": [min(steps), max(steps)] if steps else [0, 1]}
    text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def tag_layers(all_charts: list[dict], order: list[str]) -> list[str]:
    """Give every layer-scope trace its ``layer`` (the key itself, or the layer of a
    "layer@task|pair" key) for the layer picker; returns the layers drawn, in model order."""
    known = set(order)
    for chart in all_charts:
        for t in chart["traces"]:
            if t["scope"] != "layer":
                continue
            key = t["key"]
            prefixes = [n for n in known if key.startswith(n + "@")]
            t["layer"] = key if key in known or not prefixes else max(prefixes, key=len)
    present = {t["layer"] for c in all_charts for t in c["traces"] if "layer" in t}
    return [n for n in order if n in present] + sorted(present - known)


def verdict_cards(verdicts: tuple[Verdict, ...], linked: dict[str, str]) -> str:
    """One card per family; the deciding metric links to its chart (or the family's section)."""
    cards = []
    for v in verdicts:
        target = linked.get(v.family, f"family-{v.family}")
        number = ""
        if v.metric:
            number = f"{esc(v.metric)} {esc(tables.fmt(v.value))} vs {esc(tables.fmt(v.threshold))}"
        cards.append(
            f'<a class="card {esc(level_class(v.level))}" href="#{esc(target)}"><h3>{esc(v.family)}</h3>'
            f'<span class="badge {esc(level_class(v.level))}">{esc(v.level)}</span><p>{esc(v.summary)}</p>'
            f'<p class="num">{number}</p><p class="num">{esc(v.source)}</p>'
            f'<p class="go">evidence: {esc("chart" if v.family in linked else "section")} →</p></a>')
    return f'<div class="cards">{"".join(cards)}</div>'


def family_block(
    family: str, metrics: pd.DataFrame, items: list[tuple[dict, int]], verdict: Verdict | None
) -> str:
    """A family's section: verdict, charts, whole-run values, then a table per scope."""
    rows = metrics[metrics["family"] == family]
    parts = [chart_grid(items), tables.whole_run(rows)]
    for scope in sorted(set(rows["scope"]) - {"model"}):
        parts.append(tables.scope_table(family, scope, rows[rows["scope"] == scope]))
    if rows.empty:
        parts.append('<p class="empty">no metrics: the run did not record what this family needs</p>')
    return section(family, parts, verdict, wide=True, anchor=f"family-{family}")


NOSCRIPT = '<noscript><p class="gap">The charts need JavaScript; the tables hold the numbers.</p></noscript>'
TOOLBAR = """<nav class="toolbar"><label>steps <input id="gs-from" type="number" step="1"> to
<input id="gs-to" type="number" step="1"></label><button id="gs-reset" type="button">full range</button>
<label>smoothing <input id="gs-smooth" type="range" min="0" max="0.99" step="0.01" value="0">
<span id="gs-smooth-v">0</span></label><details class="layerpick"><summary>layers</summary>
<div class="pickbtns"><button id="gs-all" type="button">all</button>
<button id="gs-none" type="button">none</button>
</div><div id="gs-layers"></div></details><span class="hint">drag on a chart to zoom every chart to those
steps, double-click to reset; hover for values</span></nav>"""


def script_tags(data: str) -> str:
    from plotly.offline import get_plotlyjs  # about 4.8 MB of JavaScript, inlined

    code = resources.files("gradscope.report").joinpath("assets/dashboard.js").read_text(encoding="utf-8")
    return (f'<script type="application/json" id="gs-data">{data}</script>'
            f"<script>{get_plotlyjs()}</script><script>{code}</script>")


def build_charts(run: Run, analysis: Analysis, numbers: pd.DataFrame) -> list[dict]:
    """Every chart in page order, each with its ``place``: "training" (loss, gradient norm,
    hyperparameters: ``numbers`` from hparams.hparam_rows) or the family whose section shows it."""
    metrics = analysis.metrics
    order = layer_names_all(run)
    found: list[dict] = []
    for family in charts.all_families(metrics):
        found += charts.family_charts(metrics, family)
    for (family, name), title in views.HEATMAPS.items():
        found.append(views.heatmap(metrics, family, name, title, order))
    found += views.epoch_charts(metrics)
    found += [views.conflict_matrix(metrics), views.gwa_violins(analysis.head_sample)]
    found = [c for c in found if c is not None]
    training = [c for name in TRAINING for c in found if c["metric"] == name and c["kind"] == "line"]
    ordered = training + charts.hparam_charts(numbers, hparams.charted(numbers))
    for chart in ordered:
        chart["place"] = "training"
    rest = [c for c in found if all(c is not t for t in training)]
    for chart in rest:
        chart["place"] = chart["family"]
    ordered += sorted(rest, key=lambda c: c["kind"] != "line")  # stable: lines first
    charts.mark_spikes(ordered, metrics)
    for verdict in analysis.verdicts:
        charts.mark_evidence(ordered, verdict)
    return ordered


def render_interactive(run: Run, analysis: Analysis, header: str) -> str:
    """The whole page: ``header`` (run information) then cards, toolbar and sections."""
    numbers, everything = hparams.hparam_rows(run.table("steps", ["step", "rank", "optimizer", "hparams"]))
    all_charts = build_charts(run, analysis, numbers)
    by_place: dict[str, list[tuple[dict, int]]] = {}
    for index, chart in enumerate(all_charts):
        by_place.setdefault(chart["place"], []).append((chart, index))
    verdicts = {v.family: v for v in analysis.verdicts}
    evidence = {v.family: charts.evidence_chart(all_charts, v.metric) for v in analysis.verdicts}
    linked = {family: chart["id"] for family, chart in evidence.items() if chart is not None}
    body = [section("training: loss, gradient norm, learning rate and hyperparameters",
                    [NOSCRIPT, chart_grid(by_place.get("training", [])),
                     tables.hparam_table(hparams.summary(everything))],
                    wide=True, anchor="training")]
    body += [family_block(f, analysis.metrics, by_place.get(f, []), verdicts.get(f))
             for f in charts.all_families(analysis.metrics)]
    norms = tables.layer_norm_table(run.table("layers"), layer_names_all(run))
    body.append(section("per-layer norms", [norms], wide=True, anchor="layers"))
    body.append(section("coverage", [tables.coverage_table(run.meta)], wide=True, anchor="coverage"))
    body.append(warnings_block(run, analysis.gap))
    names = tag_layers(all_charts, layer_names_all(run))
    top = header + verdict_cards(analysis.verdicts, linked)
    footer = f"gradscope {esc(run.meta.get('gradscope_version', ''))} · {esc(run.path)}"
    return page(f"gradscope: {run.name}", top, body, footer, toolbar=TOOLBAR,
                scripts=script_tags(payload(all_charts, names, top_layers(analysis.metrics, names))))


def layer_names_all(run: Run) -> list[str]:
    return [str(e.get("name", "")) for e in run.meta.get("layers") or [] if isinstance(e, dict)]


def warnings_block(run: Run, gap: str) -> str:
    """The recorder's warnings and unreadable parts of the run; never "none" on a run
    that has no data."""
    events = [e for e in run.events() if e.get("level") == "warning"]
    items = [f"step {esc(e.get('step', '?'))}: {esc(e.get('message', ''))}" for e in events]
    items += [f"run directory: {esc(p)}" for p in run.problems]
    body = f'<p class="empty">none logged{esc(", yet the run has no data (" + gap + ")") if gap else ""}</p>'
    if items:
        body = "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"
    return section("recorder warnings", [body], wide=True, anchor="recorder-warnings")
