"""``gradscope compare --html``: one self-contained page with every run's verdicts, the
settings that differ, the main curves overlaid and the model-scope metrics table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gradscope.errors import GradscopeError
from gradscope.report import html, plots
from gradscope.report.compare import Compared, metric_table, settings_diff, verdict_levels
from gradscope.report.sections import fmt

OVERLAYS = (
    ("stability", "loss", "loss", False),
    ("stability", "grad_norm", "global gradient norm", True),
    ("coherence", "m_coherence", "m-coherence", False),
    ("noise", "b_simple", "gradient noise scale B_simple", True),
    ("alignment", "gwa_head", "GWA of the head layer", False),
    ("conflict", "conflict_fraction", "fraction of task pairs in conflict", False),
)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _overlays(compared: Sequence[Compared]) -> list[str]:
    figures = []
    for family, name, title, log in OVERLAYS:
        uri = plots.line_plot({f"{c.label} {c.run.name}": plots.series(c.analysis.metrics, family, name)
                               for c in compared}, title, log=log)
        if uri is not None:
            figures.append(html.section(f"{family}: {title}", [html.img(uri, f"{title}, every run", "")]))
    return figures


def _metrics(compared: Sequence[Compared]) -> str:
    frame = metric_table([c.analysis for c in compared])
    headers = ["metric"] + [f"{c.label} {stat}" for stat in ("last", "mean") for c in compared]
    rows = [[f"{family}.{name}"] + [fmt(frame.loc[(family, name, key), (stat, i)])
                                    for stat in ("last", "mean") for i in range(len(compared))]
            for family, name, key in frame.index]
    return html.section("Metrics at model scope", [_table(headers, rows)], wide=True)


def write_compare_html(compared: Sequence[Compared], path: Path | str) -> None:
    labels = [c.label for c in compared]
    names = " · ".join(f"{c.label} {html.esc(c.run.name)}" for c in compared)
    header = (f"<h1>gradscope compare<small>{names}</small></h1>" + '<dl class="meta">'
              + "".join(f"<dt>{c.label}</dt><dd>{html.esc(c.run.path)}</dd>" for c in compared) + "</dl>")
    diff, same = settings_diff([c.run for c in compared])
    settings = html.section(f"Settings that differ ({same} others are the same)", [
        _table(["setting", *labels], [[str(k), *map(str, row)] for k, row in diff.iterrows()])])
    verdicts = html.section("Verdicts", [_table(["family", *labels], [
        [family, *levels] for family, levels in verdict_levels([c.analysis for c in compared])])])
    body = [settings, verdicts, *_overlays(compared), _metrics(compared)]
    title = "gradscope compare: " + " vs ".join(c.run.name for c in compared)
    try:
        Path(path).write_text(html.page(title, header, body), encoding="utf-8")
    except OSError as err:
        raise GradscopeError(f"cannot write the HTML comparison to {path}: {err.strerror}") from None
