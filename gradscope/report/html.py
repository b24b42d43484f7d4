"""The HTML pages' frame: CSS, header, sections, escaping, and the report's entry points
(render_html / write_html; the interactive dashboard itself is gradscope.report.interactive).
One self-contained file: inline CSS and scripts, no network.

Every string that comes from the run (layer, task and run names, the command line,
warnings, verdict text) goes through ``esc`` (html.escape with quotes) before it is
placed in the page; figures carry such names only inside their pixels.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from gradscope.analysis.engine import Analysis
from gradscope.analysis.types import Verdict
from gradscope.errors import GradscopeError
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
font-size:12px;overflow-wrap:anywhere}
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
a.card{text-decoration:none;display:block}a.card:hover{box-shadow:0 2px 10px rgba(0,0,0,.45)}
.card .go{color:#1d4ed8;font-size:12px;margin-top:4px}
.toolbar{position:sticky;top:0;z-index:10;display:flex;flex-wrap:wrap;align-items:center;gap:8px 18px;
padding:8px 32px;background:#fff;border-bottom:1px solid var(--line);box-shadow:0 1px 4px rgba(15,23,42,.08);
font-size:13px}
.toolbar input[type=number]{width:80px}.toolbar button{font:inherit;padding:2px 10px}
.toolbar .hint{color:var(--mute);font-size:12px}
.layerpick{position:relative}.layerpick summary{cursor:pointer;font-weight:600}
.layerpick[open] #gs-layers,.layerpick[open] .pickbtns{background:#fff}
.layerpick[open]>div{position:absolute;left:0;min-width:260px;z-index:11}
.pickbtns{top:24px;padding:6px 8px;border:1px solid var(--line);border-bottom:0;border-radius:6px 6px 0 0}
#gs-layers{top:58px;max-height:340px;overflow:auto;padding:4px 8px 8px;border:1px solid var(--line);
border-top:0;border-radius:0 0 6px 6px;box-shadow:0 4px 14px rgba(15,23,42,.18)}
#gs-layers label{display:block;white-space:nowrap;font-family:ui-monospace,Menlo,monospace;font-size:12px}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin:0 6px 0 4px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(440px,1fr));gap:10px;margin:8px 0}
figure.chart{margin:0;border:1px solid var(--line);border-radius:8px;padding:6px 8px 2px;min-width:0}
figure.chart:target{outline:3px solid #2563eb}
figcaption{display:flex;align-items:center;gap:8px;font-weight:600;font-size:13px}
figcaption .ct{flex:1;font-family:ui-monospace,Menlo,monospace}figcaption .badge{margin:0}
button.log{font:inherit;font-size:11px;font-weight:400;padding:0 8px}
.plot{min-height:270px}.plot .modebar{opacity:0;transition:opacity .2s}.plot:hover .modebar{opacity:1}
.bad{color:var(--alert);font-size:12px;margin:0 0 4px}
.nan{color:var(--mute);font-size:12px;margin:0 0 4px}
.whole{font-family:ui-monospace,Menlo,monospace;font-size:12.5px;color:#334155}
.tablebox{max-height:420px;overflow:auto;margin:10px 0}
caption{text-align:left;font-weight:600;padding:4px 0;color:#334155}
th{cursor:pointer;position:sticky;top:0;background:#f8fafc;white-space:nowrap}
table[data-table=settings] td{overflow-wrap:anywhere;min-width:80px}
th[data-dir=up]::after{content:" ▲"}th[data-dir=down]::after{content:" ▼"}
"""


def esc(value: object) -> str:
    """HTML-escape anything user-supplied (quotes included)."""
    return html.escape(str(value), quote=True)


def page(title: str, header: str, body: Iterable[str], footer: str = "", *, toolbar: str = "",
         scripts: str = "") -> str:
    """The whole document; ``title`` is escaped here, the other parts are HTML already."""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<header>{header}</header>{toolbar}<main>{''.join(body)}</main><footer>{footer}</footer>"
        f"{scripts}</body></html>\n"
    )


def level_class(level: str) -> str:
    """The CSS class of a verdict state ("no data" -> "nodata")."""
    return level.replace(" ", "")


def img(uri: str | None, alt: str, missing: str) -> str:
    if uri is None:
        return f'<p class="empty">{esc(missing)}</p>'
    return f'<img src="{uri}" alt="{esc(alt)}">'


def section(title: str, parts: Iterable[str], verdict: Verdict | None = None, wide: bool = False,
            anchor: str = "") -> str:
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
    anchor = anchor or re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
    return f'<section class="{classes}" id="{anchor}">{head}</h2>{lede}{"".join(parts)}</section>'


def run_header(run: Run, steps: pd.DataFrame, title: str = "gradscope report") -> str:
    """Run information, as the terminal report's first panel gives it."""
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
        f"sketch {config.get('sketch')}, world size {meta.get('world_size', 1)}",
        "steps": step_summary(steps),
    }
    grid = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in rows.items())
    return f'<h1>{esc(title)}<small>{esc(run.name)}</small></h1><dl class="meta">{grid}</dl>'


def step_summary(steps: pd.DataFrame) -> str:
    """"240 (240 with per-layer statistics; median step 12.0 ms, recorder 1.20 ms)"."""
    if steps.empty:
        return "none recorded"
    text = f"{len(steps)}"
    if "recorded" in steps.columns:
        text += f" ({int(steps['recorded'].sum())} with per-layer statistics"
        skipped = int(steps["skipped"].sum()) if "skipped" in steps.columns else 0
        text += f", {skipped} skipped by the GradScaler" if skipped else ""
        if {"step_time", "recorder_time"} <= set(steps.columns):
            step_time, own = steps["step_time"].median(), steps["recorder_time"].median()
            if math.isfinite(step_time) and step_time > 0:
                text += f"; median step {step_time * 1e3:.1f} ms, recorder {own * 1e3:.2f} ms"
        text += ")"
    return text


def render_html(run: Run, analysis: Analysis) -> str:
    """The whole interactive dashboard as one HTML string (gradscope.report.interactive)."""
    from gradscope.report.interactive import render_interactive

    steps = run.table("steps", ["step", "recorded", "skipped", "step_time", "recorder_time"])
    gap = ""
    if analysis.gap:
        gap = f'<p class="gap">NO DATA: {esc(analysis.gap)}. Every verdict is "no data".</p>'
    return render_interactive(run, analysis, run_header(run, steps) + gap)


def write_html(run: Run, analysis: Analysis, path: Path | str) -> None:
    """Write the dashboard for ``run`` to ``path`` (one file, safe to mail or attach to CI)."""
    document = render_html(run, analysis)
    try:
        Path(path).write_text(document, encoding="utf-8")
    except OSError as err:
        raise GradscopeError(f"cannot write the HTML report to {path}: {err.strerror}") from None
