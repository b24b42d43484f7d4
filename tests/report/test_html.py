"""The interactive HTML report, read as a parser reads it: one self-contained file, a chart
for every per-step metric whose data is the metrics table's, the learning rate, tables at
least as complete as the terminal's, hostile names escaped."""

from __future__ import annotations

import json
import math
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

from gradscope.analysis.run import analyze_run
from gradscope.analysis.types import FAMILIES
from gradscope.report.html import write_html
from gradscope.store.reader import open_run
from tests.report.conftest import GRADSCOPE, HOSTILE_LAYER, HOSTILE_TASK, REPO, make_empty_run, make_run


class Page(HTMLParser):
    """Tags, ids, scripts (inline text and any src), table headers and text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.ids: set[str] = set()
        self.script_src: list[str] = []
        self.scripts: list[str] = []
        self.data_tables: dict[str, list[list[str]]] = {}
        self.text: list[str] = []
        self._in_script = False
        self._table: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(str(values["id"]))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")
            if values.get("src"):
                self.script_src.append(str(values["src"]))
        if tag == "table" and values.get("data-table"):
            self._table = str(values["data-table"])
            self.data_tables[self._table] = []
        if tag == "tr" and self._table:
            self.data_tables[self._table].append([])

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False
        if tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data
            return
        self.text.append(data)
        if self._table and self.data_tables[self._table] and data.strip():
            self.data_tables[self._table][-1].append(data.strip())


def render(run_dir: Path, path: Path) -> tuple[str, Page, dict]:
    run = open_run(run_dir)
    write_html(run, analyze_run(run), path)
    source = path.read_text(encoding="utf-8")
    parsed = Page()
    parsed.feed(source)
    payload = json.loads(parsed.scripts[0])
    return source, parsed, payload


@pytest.fixture(scope="module")
def page(synthetic_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Page, dict]:
    before = dict(matplotlib.rcParams)
    out = render(synthetic_run, tmp_path_factory.mktemp("html") / "report.html")
    assert dict(matplotlib.rcParams) == before  # the user's matplotlib style is untouched
    return out


def test_sections_and_one_frame_per_chart(page: tuple[str, Page, dict]) -> None:
    _, parsed, payload = page
    for anchor in ("training", *(f"family-{f}" for f in FAMILIES), "layers", "coverage", "recorder-warnings"):
        assert anchor in parsed.ids
    ids = [c["id"] for c in payload["charts"]]
    assert len(ids) == len(set(ids)) and set(ids) <= parsed.ids
    metrics = {c["metric"] for c in payload["charts"]}
    for expected in ("stability.loss", "stability.grad_norm", "optimizer.lr", "conflict.cos",
                     "coherence.m_coherence", "noise.b_simple", "stability.update_ratio"):
        assert expected in metrics


def test_self_contained(page: tuple[str, Page, dict]) -> None:
    source, parsed, _ = page
    assert parsed.script_src == [] and "link" not in parsed.tags and "iframe" not in parsed.tags
    assert len(parsed.scripts) == 3 and "plotly.js v" in parsed.scripts[1]  # data, Plotly, the page's own
    assert "<img" not in source.split("<script", 1)[0]


def test_chart_data_is_the_metrics_table(synthetic_run: Path, page: tuple[str, Page, dict]) -> None:
    _, _, payload = page
    metrics = analyze_run(open_run(synthetic_run)).metrics
    checked = 0
    for chart in payload["charts"]:
        if chart["family"] == "optimizer" or chart["kind"] != "line":
            continue
        family, name = chart["metric"].split(".", 1)
        for trace in chart["traces"]:
            rows = metrics[(metrics["family"] == family) & (metrics["name"] == name)
                           & (metrics["scope"] == trace["scope"]) & (metrics["key"] == trace["key"])
                           & (metrics["step"] >= 0)].sort_values("step")
            assert trace["x"] == rows["step"].tolist()
            for got, want in zip(trace["y"], rows["value"]):
                assert (got is None and not math.isfinite(want)) or got == pytest.approx(want, rel=1e-6)
            checked += 1
    assert checked > 20


def test_learning_rate_and_hyperparameters(page: tuple[str, Page, dict]) -> None:
    _, parsed, payload = page
    lr = next(c for c in payload["charts"] if c["metric"] == "optimizer.lr")
    assert lr["traces"][0]["y"] == pytest.approx([0.1 * 0.97**s for s in range(24)], rel=1e-6)
    assert lr["log"] is False and lr["canLog"] is True
    assert ["group 0", "lr", "0.1"] == parsed.data_tables["hparams"][1][:3]


def test_layer_selection_and_layer_tables(page: tuple[str, Page, dict]) -> None:
    _, parsed, payload = page
    assert payload["layers"] == ["fc1", HOSTILE_LAYER] and payload["defaultLayers"] == payload["layers"]
    norms = next(c for c in payload["charts"] if c["metric"] == "stability.grad_norm")
    assert [t["scope"] for t in norms["traces"]] == ["model", "layer", "layer"]
    layers = parsed.data_tables["layers"]
    assert layers[0][:3] == ["layer", "grad norm first", "grad norm last"]
    assert {row[0] for row in layers[1:]} == {"fc1", HOSTILE_LAYER}
    # at least what the terminal shows: per-key tables of every family's scopes, labelled
    for key in ("stability:layer", "coherence:layer", "conflict:task_pair", "alignment:sample"):
        assert key in parsed.data_tables, parsed.data_tables.keys()
    assert "m_coherence mean" in parsed.data_tables["coherence:layer"][0]


def test_verdict_evidence_links_to_its_chart(synthetic_run: Path, page: tuple[str, Page, dict]) -> None:
    source, _, payload = page
    analysis = analyze_run(open_run(synthetic_run))
    charts = {c["metric"]: c for c in payload["charts"][::-1] if c["kind"] in ("line", "epoch")}  # the first
    for verdict in analysis.verdicts:
        if verdict.metric in charts:
            chart = charts[verdict.metric]
            assert f'href="#{chart["id"]}"' in source
            assert chart.get("verdict") == verdict.level
            if math.isfinite(verdict.threshold):
                assert any(g["y"] == verdict.threshold for g in chart["guides"])


def test_hostile_names_only_escaped(page: tuple[str, Page, dict]) -> None:
    source, parsed, payload = page
    assert HOSTILE_LAYER not in source and HOSTILE_TASK not in source
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in source
    assert HOSTILE_LAYER in payload["layers"]  # the data keeps the name; the page shows it as text
    assert HOSTILE_LAYER in " ".join(parsed.text)


def test_long_run_is_bucketed_and_keeps_its_spike(tmp_path: Path) -> None:
    run = make_run(tmp_path / "long", steps=2500, with_samples=False, tasks=(), spike_at=1700,
                   layers=("fc1",))
    source, _, payload = render(run, tmp_path / "long.html")
    loss = next(c for c in payload["charts"] if c["metric"] == "stability.loss")["traces"][0]
    assert "lo" in loss and len(loss["x"]) <= 1000
    steps = open_run(run).table("steps").sort_values("step")
    assert max(loss["hi"]) == pytest.approx(steps["loss"].max(), rel=1e-6)  # the spike survives
    bucket = next(i for i, (a, b) in enumerate(zip(loss["x"], loss["x1"])) if a <= 1700 <= b)
    assert loss["hi"][bucket] == pytest.approx(steps["loss"].iloc[1700], rel=1e-6)
    assert len(source) < 6_000_000


def test_minimal_run_page(minimal_run: Path, tmp_path: Path) -> None:
    _, parsed, payload = render(minimal_run, tmp_path / "r.html")
    text = " ".join(parsed.text)
    assert "no named tasks" in text and "no metrics: the run did not record" in text
    assert not [c for c in payload["charts"] if c["family"] == "coherence"]


def test_nonfinite_values_are_gaps_and_said(tmp_path: Path) -> None:
    run = make_run(tmp_path / "inf", inf_at=12, tasks=())
    source, _, payload = render(run, tmp_path / "r.html")
    values = [v for c in payload["charts"] for t in c["traces"] for v in t["y"] if v is not None]
    assert np.isfinite(values).all()
    assert "no value (nan) at" in source  # z-scores before enough history


@pytest.mark.slow
def test_cli_report_html_and_figures_on_a_recorded_run(recorded_run: Path, tmp_path: Path) -> None:
    """`gradscope report RUN --html --figures` as a user runs it, on a run `gradscope record` wrote."""
    page, figs = tmp_path / "report.html", tmp_path / "figs"
    command = [str(GRADSCOPE), "report", str(recorded_run), "--quiet", "--html", str(page),
               "--figures", str(figs)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    parsed = Page()
    parsed.feed(page.read_text(encoding="utf-8"))
    payload = json.loads(parsed.scripts[0])
    lr = next(c for c in payload["charts"] if c["metric"] == "optimizer.lr")
    assert lr["traces"][0]["y"] == [0.1] * 20 and lr["traces"][0]["x"] == list(range(20))  # SGD(lr=0.1)
    assert payload["layers"] == ["0", "2"] and payload["steps"] == [0, 19]
    metrics = analyze_run(open_run(recorded_run)).metrics
    norm = metrics[(metrics["name"] == "grad_norm") & (metrics["scope"] == "model")].sort_values("step")
    chart = next(c for c in payload["charts"] if c["metric"] == "stability.grad_norm")
    assert chart["traces"][0]["y"] == pytest.approx(norm["value"].tolist(), rel=1e-6)
    assert (figs / "loss-grad-norm.png").stat().st_size > 1000 and (figs / "learning-rate.pdf").exists()


def test_many_layers_share_a_size_budget() -> None:
    """75 layers x 19 per-layer metrics (a small transformer): ~200 buckets per layer curve,
    the model curve keeps 1000, so a long run's page stays around 12 MB of data at most."""
    from gradscope.report import charts

    rows = [("stability", f"m{i}", "layer", f"blocks.{j}", s, 1.0) for i in range(19) for j in range(75)
            for s in (0, 1)]
    metrics = pd.DataFrame(rows, columns=["family", "name", "scope", "key", "step", "value"])
    assert charts.layer_limit(metrics) == 1_500_000 // (5 * 75 * 19)
    steps = np.arange(5000)
    values = np.random.default_rng(0).random(5000)
    values[4321] = 9.0
    curve = charts.trace("blocks.0", "layer", "blocks.0", steps, values, limit=210)
    assert len(curve["x"]) == 210 and max(curve["hi"]) == 9.0


def test_run_without_steps_says_no_data(tmp_path: Path) -> None:
    run = make_empty_run(tmp_path / "empty", status="crashed", exit_code=1)
    source, parsed, payload = render(run, tmp_path / "r.html")
    assert "NO DATA" in source and payload["charts"] == []
    assert "yet the run has no data" in " ".join(parsed.text)


def test_a_learning_rate_burst_is_charted_and_tabled() -> None:
    """The demo's planted burst (3e-3, then 0.2 at steps 160-161), as steps.hparams holds it."""
    from gradscope.report import charts, hparams

    lrs = [0.2 if s in (160, 161) else 3e-3 for s in range(240)]
    steps = pd.DataFrame({"step": range(240), "rank": 0, "optimizer": 0,
                          "hparams": [json.dumps([{"lr": lr, "betas": [0.9, 0.999], "foreach": None}])
                                      for lr in lrs]})
    numbers, everything = hparams.hparam_rows(steps)
    assert hparams.charted(numbers) == ["lr"]  # betas never change: table only
    (chart,) = charts.hparam_charts(numbers, ["lr"])
    trace = chart["traces"][0]
    assert [s for s, v in zip(trace["x"], trace["y"]) if v == 0.2] == [160, 161]
    rows = {(g, n): rest for g, n, *rest in hparams.summary(everything)}
    assert rows[("group 0", "lr")] == ["0.003", "0.003", "steps 160, 162", 2]
    assert rows[("group 0", "foreach")][:2] == ["null", "null"]


def test_layer_picker_starts_with_the_largest_layers(tmp_path: Path) -> None:
    """Eight layers, three with large updates: those are drawn first, not the first six."""
    from gradscope.report.interactive import top_layers

    names = [f"blocks.{i}.fc" for i in range(8)]
    ratio = {name: (1e-1 if i in (2, 5, 7) else 1e-4) for i, name in enumerate(names)}
    metrics = pd.DataFrame({"family": "stability", "name": "update_ratio", "scope": "layer",
                            "key": names, "step": 0, "value": [ratio[n] for n in names]})
    assert top_layers(metrics, names, 3) == ["blocks.2.fc", "blocks.5.fc", "blocks.7.fc"]
    assert top_layers(metrics.iloc[:0], names, 2) == names[:2]
    run = make_run(tmp_path / "run", layers=tuple(names), tasks=(), with_samples=False, spike_at=None)
    page = tmp_path / "r.html"
    assert subprocess.run([str(GRADSCOPE), "report", str(run), "--html", str(page)], cwd=REPO,
                          capture_output=True, timeout=300).returncode == 0
    data = json.loads(re.search(r'id="gs-data">(.*?)</script>', page.read_text(), re.S).group(1))
    assert len(data["defaultLayers"]) == 6 and set(data["defaultLayers"]) <= set(names)
