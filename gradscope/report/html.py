"""The HTML report: one self-contained file (inline CSS, figures as base64 PNG, no
scripts, no network), laid out as a dashboard.

Every string that comes from the run (layer, task and run names, the command line,
warnings, verdict text) goes through ``esc`` (html.escape with quotes) before it is
placed in the page; figures carry such names only inside their pixels.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from gradscope.analysis.engine import Analysis
from gradscope.analysis.thresholds import M_COHERENCE_MIN, SEVERE_CONFLICT, STRONG_CONFLICT, UPDATE_RATIO
from gradscope.analysis.types import Verdict
from gradscope.errors import GradscopeError
from gradscope.report import plots
from gradscope.report.coverage import layer_coverage
from gradscope.report.sections import fmt
from gradscope.store.reader import Run

CSS = """
:root{--ok:#16a34a;--warn:#d97706;--alert:#dc2626;--nodata:#a21caf;--ink:#0f172a;--mute:#64748b;--line:#e2e8f0}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);
background:#f1f5f9}
header{background:linear-gradient(120deg,#0f172a,#1e3a8a);color:#fff;padding:22px 32px 26px}
header h1{margin:0 0 4px;font-size:22px;font-weight:650;letter-spacing:.2px}
header h1 small{font-weight:400;opacity:.7;font-size:14px;margin-left:10px}
.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;font-size:12.5px;opacity:.9;
margin:10px 0 18px}
.meta dt{opacity:.65}.meta dd{margin:0;font-family:ui-monospace,Menlo,monospace;word-break:break-all}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(210px,1fr));gap:12px}
.card{background:#fff;color:var(--ink);border-radius:10px;padding:12px 14px;border-top:5px solid var(--ok);
box-shadow:0 1px 3px rgba(0,0,0,.25)}
.card.warn{border-top-color:var(--warn)}.card.alert,.card.failed{border-top-color:var(--alert)}
.card.nodata{border-top-color:var(--nodata)}
.gap{background:#fdf4ff;color:#701a75;border-radius:8px;padding:8px 12px;margin:0 0 14px;font-weight:600}
.card h3{margin:0;font-size:13px;text-transform:uppercase;letter-spacing:.6px;color:var(--mute)}
.badge{display:inline-block;border-radius:999px;padding:1px 9px;font-size:12px;font-weight:650;color:#fff;
background:var(--ok);margin:6px 0}
.badge.warn{background:var(--warn)}.badge.alert,.badge.failed{background:var(--alert)}
.badge.nodata{background:var(--nodata)}
.card p{margin:2px 0;font-size:13px}.card .num{font-family:ui-monospace,Menlo,monospace;color:var(--mute);
font-size:12px}
main{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:18px;padding:22px 32px 40px}
section{background:#fff;border-radius:10px;padding:16px 18px;box-shadow:0 1px 2px rgba(15,23,42,.08);
border-left:4px solid transparent}
section.wide{grid-column:1/-1}
section.warn{border-left-color:var(--warn)}section.alert,section.failed{border-left-color:var(--alert)}
section.nodata{border-left-color:var(--nodata)}
section h2{margin:0 0 6px;font-size:16px}section h2 .badge{margin:0 0 0 8px;vertical-align:2px}
.lede{margin:0 0 8px;color:#334155}
ul.details{margin:4px 0 8px;padding-left:18px;color:var(--mute);font-size:12.5px}
img{max-width:100%;height:auto;display:block;margin:6px auto}
.empty{color:var(--mute);font-style:italic;margin:8px 0}
table{border-collapse:collapse;font-size:12.5px;width:100%}
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid var(--line)}
td.n{text-align:right;font-family:ui-monospace,Menlo,monospace}
.figs{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:8px}
footer{padding:0 32px 30px;color:var(--mute);font-size:12px}
"""


def esc(value: object) -> str:
    """HTML-escape anything user-supplied (quotes included)."""
    return html.escape(str(value), quote=True)


def page(title: str, header: str, body: Iterable[str], footer: str = "") -> str:
    """The whole document; ``title`` is escaped here, the other parts are HTML already."""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<header>{header}</header><main>{''.join(body)}</main><footer>{footer}</footer></body></html>\n"
    )


def level_class(level: str) -> str:
    """The CSS class of a verdict state ("no data" -> "nodata")."""
    return level.replace(" ", "")


def img(uri: str | None, alt: str, missing: str) -> str:
    if uri is None:
        return f'<p class="empty">{esc(missing)}</p>'
    return f'<img src="{uri}" alt="{esc(alt)}">'


def section(title: str, parts: Iterable[str], verdict: Verdict | None = None, wide: bool = False) -> str:
    """A panel with a title, the family's verdict (badge, summary, details) and content."""
    level = verdict.level if verdict else ""
    classes = " ".join(c for c in (level_class(level) if level != "ok" else "", "wide" if wide else "") if c)
    head = f"<h2>{esc(title)}"
    lede = ""
    if verdict is not None:
        head += f'<span class="badge {esc(level_class(level))}">{esc(level)}</span>'
        lede = f'<p class="lede">{esc(verdict.summary)}</p>'
        if verdict.details:
            shown = list(verdict.details[:6])
            if len(verdict.details) > 6:
                shown.append(f"... and {len(verdict.details) - 6} more findings")
            lede += '<ul class="details">' + "".join(f"<li>{esc(d)}</li>" for d in shown)
            lede += "</ul>"
    anchor = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return f'<section class="{classes}" id="{anchor}">{head}</h2>{lede}{"".join(parts)}</section>'


def verdict_cards(verdicts: Sequence[Verdict]) -> str:
    cards = []
    for v in verdicts:
        number = f"{esc(v.metric)} {fmt(v.value)} vs {fmt(v.threshold)}" if v.metric else ""
        cards.append(
            f'<div class="card {esc(level_class(v.level))}"><h3>{esc(v.family)}</h3>'
            f'<span class="badge {esc(level_class(v.level))}">{esc(v.level)}</span><p>{esc(v.summary)}</p>'
            f'<p class="num">{number}</p><p class="num">{esc(v.source)}</p></div>'
        )
    return f'<div class="cards">{"".join(cards)}</div>'


def run_header(run: Run, steps: pd.DataFrame, title: str = "gradscope report") -> str:
    meta = run.meta
    config = meta.get("config") or {}
    rows = {
        "run": str(run.path),
        "status": meta.get("status", "?"),
        "command": " ".join(map(str, meta.get("command") or [])),
        "started / ended": f"{meta.get('started')} / {meta.get('ended') or '-'}",
        "versions": f"gradscope {meta.get('gradscope_version')}, torch {meta.get('torch_version', '?')}, "
        f"python {meta.get('python_version')}",
        "recording": f"profile {config.get('profile')}, every {config.get('every')}, "
        f"world size {meta.get('world_size', 1)}",
        "steps": f"{len(steps)} recorded",
    }
    grid = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in rows.items())
    return f'<h1>{esc(title)}<small>{esc(run.name)}</small></h1><dl class="meta">{grid}</dl>'


def layer_order(run: Run) -> list[str]:
    return [str(e.get("name", "")) for e in run.meta.get("layers") or [] if isinstance(e, dict)]


def training_sections(run: Run, metrics: pd.DataFrame, verdicts: dict[str, Verdict]) -> list[str]:
    """Loss and gradient norm, then the per-layer heatmaps (stability's evidence)."""
    order = layer_order(run)
    norms = plots.series(metrics, "stability", "grad_norm", "layer")
    ratios = plots.series(metrics, "stability", "update_ratio", "layer")
    return [
        section("Stability: loss and gradient norm", [img(
            plots.loss_and_grad(metrics), "loss and gradient norm over steps", "no loss or gradient norm",
        )], verdicts.get("stability"), wide=True),
        section("Layers: gradient norm", [img(
            plots.heatmap(norms, "per-layer gradient norm", order), "per-layer gradient norm heatmap",
            "no per-layer statistics recorded",
        )]),
        section("Layers: update / weight ratio", [img(
            plots.heatmap(ratios, f"per-layer |ΔW| / |W| (verdict band {UPDATE_RATIO.text()})", order),
            "per-layer update to weight ratio heatmap", "no weight updates recorded",
        )]),
    ]


def gradient_sections(analysis: Analysis, verdicts: dict[str, Verdict]) -> list[str]:
    """Coherence and noise-scale curves, the GWA distribution per epoch."""
    metrics = analysis.metrics
    coherence = plots.line_plot(
        {n: plots.series(metrics, "coherence", n) for n in ("m_coherence", "stiffness_cos")},
        "m-coherence (1 = orthogonal per-sample gradients)",
        guides=[(M_COHERENCE_MIN, plots.WARN, f"verdict warns below {M_COHERENCE_MIN:g}")],
    )
    noise = plots.line_plot(
        {"B_simple": plots.series(metrics, "noise", "b_simple"),
         "batch size": plots.series(metrics, "noise", "batch_size")},
        "gradient noise scale vs batch size", log=True,
    )
    epochs = metrics[(metrics["family"] == "alignment") & (metrics["name"] == "epoch_score")]
    epochs = epochs.assign(epoch=pd.to_numeric(epochs["key"], errors="coerce"))
    gwa = plots.gwa_distribution(analysis.head_sample, epochs)
    return [
        section("Coherence", [img(coherence, "m-coherence over steps", "no per-sample norms recorded")],
                verdicts.get("coherence")),
        section("Noise", [img(noise, "B_simple and batch size over steps", "no per-sample norms recorded")],
                verdicts.get("noise")),
        section("Alignment (GWA)", [img(gwa, "per-sample GWA per epoch", "no per-sample GWA recorded")],
                verdicts.get("alignment"), wide=True),
    ]


def conflict_section(metrics: pd.DataFrame, verdict: Verdict | None) -> str:
    """Task x task cosine heatmap and the pairwise cosines over steps with GCond's zones."""
    pairs = plots.series(metrics, "conflict", "cos", "task_pair")
    groups = plots.series(metrics, "conflict", "group_cos", "group_pair")
    over = pairs if len(pairs) else groups
    lines = {str(k): f for k, f in over.groupby("key")}
    curves = plots.line_plot(lines, "pairwise gradient cosine over steps", decorate=plots.conflict_zones)
    parts = [img(plots.conflict_heatmap(metrics), "task by task gradient cosine", "no named tasks recorded"),
             img(curves, "pairwise cosine over steps", "no task or group gradients recorded")]
    note = (f'<p class="empty">Shaded: conflict (cos &lt; 0, PCGrad), strong (&lt; {STRONG_CONFLICT:g}) '
            f"and severe (&lt; {SEVERE_CONFLICT:g}) zones of GCond.</p>")
    return section("Conflict", ['<div class="figs">', *parts, "</div>", note], verdict, wide=True)


def coverage_section(run: Run) -> str:
    """Per layer: whether per-sample rows were recorded, and at how many steps (meta.json)."""
    rows = "".join(
        f"<tr><td>{esc(c.name)}</td><td>{esc(c.type)}</td>"
        f'<td class="n">{esc(c.numel)}</td><td>{esc(c.method)}</td>'
        f"<td>{esc(('yes' if c.covered else 'no') + (': ' + c.note if c.note else ''))}</td></tr>"
        for c in layer_coverage(run.meta)
    )
    table = (
        "<table><tr><th>layer</th><th>type</th><th>params</th><th>method</th><th>per-sample rows</th></tr>"
        f"{rows}</table>" if rows else '<p class="empty">no layer table in meta.json</p>'
    )
    return section("Coverage", [table])


def warnings_section(run: Run) -> str:
    events = [e for e in run.events() if e.get("level") == "warning"]
    items = [f"step {esc(e.get('step', '?'))}: {esc(e.get('message', ''))}" for e in events]
    items += [f"run directory: {esc(p)}" for p in run.problems]
    body = '<p class="empty">none</p>'
    if items:
        body = "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"
    return section("Recorder warnings", [body])


def render_html(run: Run, analysis: Analysis) -> str:
    """The whole dashboard as one HTML string."""
    steps = run.table("steps", ["step"])
    metrics = analysis.metrics
    verdicts = {v.family: v for v in analysis.verdicts}
    body = [
        conflict_section(metrics, verdicts.get("conflict")),
        *training_sections(run, metrics, verdicts),
        *gradient_sections(analysis, verdicts),
        coverage_section(run),
        warnings_section(run),
    ]
    gap = ""
    if analysis.gap:
        gap = f'<p class="gap">NO DATA: {esc(analysis.gap)}. Every verdict is "no data".</p>'
    header = run_header(run, steps) + gap + verdict_cards(analysis.verdicts)
    footer = f"gradscope {esc(run.meta.get('gradscope_version', ''))} · {esc(run.path)}"
    return page(f"gradscope: {run.name}", header, body, footer)


def write_html(run: Run, analysis: Analysis, path: Path | str) -> None:
    """Write the dashboard for ``run`` to ``path`` (one file, safe to mail or attach to CI)."""
    document = render_html(run, analysis)
    try:
        Path(path).write_text(document, encoding="utf-8")
    except OSError as err:
        raise GradscopeError(f"cannot write the HTML report to {path}: {err.strerror}") from None
