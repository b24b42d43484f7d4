"""The HTML report in a real headless browser (Chromium; skipped where none is installed):
every chart draws, zooming one zooms them all, hover shows values, log / linear and the
layer picker redraw, short runs get whole-step ticks.

The test appends a probe script (probe.js) to a copy of the report; the probe drives the page as a
reader would (a zoom through Plotly's own relayout, a hover, clicks) and writes what it
saw into the DOM, which Chromium's --dump-dom prints.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gradscope.analysis.run import analyze_run
from gradscope.report.html import write_html
from gradscope.store.reader import open_run
from tests.report.conftest import make_run

NAMES = ("chromium", "chromium-browser", "google-chrome")
HOSTILE = "<img src=x onerror=window.__pwned=1>"
BROWSER = next((shutil.which(n) for n in NAMES if shutil.which(n)), None)
pytestmark = [pytest.mark.slow, pytest.mark.skipif(BROWSER is None, reason="no Chromium installed")]

PROBE = "<script>" + (Path(__file__).parent / "probe.js").read_text() + "</script>"


def probe(page: Path, tmp_path: Path) -> dict:
    copy = tmp_path / "probed.html"
    copy.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    command = [str(BROWSER), "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
               f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=30000", "--dump-dom",
               copy.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, done.stderr[-2000:]
    return json.loads(found.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
                      .replace("&amp;", "&"))


def test_charts_draw_and_respond(tmp_path: Path) -> None:
    run = make_run(tmp_path / "short", steps=6, tasks=(), layers=("fc1", "fc2", HOSTILE), spike_at=None)
    page = tmp_path / "report.html"
    opened = open_run(run)
    write_html(opened, analyze_run(opened), page)
    payload = json.loads(re.search(r'id="gs-data">(.*?)</script>', page.read_text(), re.S).group(1))
    seen = probe(page, tmp_path)
    assert seen["frames"] == len(payload["charts"]) and seen["drawn"] == seen["frames"] > 10
    assert seen["ticks"] and all(re.fullmatch(r"\d+", t) for t in seen["ticks"]), seen["ticks"]  # no 0.5
    stepped = [k for k in seen["kinds"] if k in ("line", "heatmap")]
    assert len(seen["ranges"]) == len(stepped) and "heatmap" in stepped
    assert [r for r in seen["ranges"] if r != [1.5, 3.5]] == []  # one zoom moved every step chart
    assert (seen["from"], seen["to"]) == ("2", "3")
    assert "model" in seen["hover"] and re.search(r"\d", seen["hover"])
    assert seen["scale"][0] != seen["scale"][1]
    assert seen["traces"][1] < seen["traces"][0]  # fc2 unticked: its curve is gone
    assert seen["pwned"] is False  # a layer named like markup is shown, never run
    assert HOSTILE in seen["layerLabels"] and HOSTILE in seen["legend"]
