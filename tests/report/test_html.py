"""The HTML report: one self-contained file, its sections, hostile names escaped."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import matplotlib
import pytest

from gradscope.analysis.run import analyze_run
from gradscope.report.html import write_html
from gradscope.store.reader import open_run
from tests.report.conftest import HOSTILE_LAYER, HOSTILE_TASK


class Page(HTMLParser):
    """Collects tags, attributes, ids and text; anything script-like is recorded."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.ids: set[str] = set()
        self.sources: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(str(values["id"]))
        if tag == "img":
            self.sources.append(str(values.get("src")))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def page(synthetic_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Page]:
    run = open_run(synthetic_run)
    path = tmp_path_factory.mktemp("html") / "report.html"
    before = dict(matplotlib.rcParams)
    write_html(run, analyze_run(run), path)
    assert dict(matplotlib.rcParams) == before  # the user's matplotlib style is untouched
    source = path.read_text()
    parsed = Page()
    parsed.feed(source)
    return source, parsed


def test_sections_present(page: tuple[str, Page]) -> None:
    _, parsed = page
    sections = ["conflict", "stability-loss", "layers-gradient", "layers-update", "coherence", "noise",
                "alignment", "coverage", "recorder-warnings"]
    assert all(any(i.startswith(s) for i in parsed.ids) for s in sections), parsed.ids
    assert len(parsed.ids) == len(sections)
    text = " ".join(parsed.text)
    for family in ("conflict", "coherence", "alignment", "noise", "stability"):
        assert family in text


def test_self_contained(page: tuple[str, Page]) -> None:
    source, parsed = page
    assert "script" not in parsed.tags and "link" not in parsed.tags
    assert len(parsed.sources) >= 7 and all(s.startswith("data:image/png;base64,") for s in parsed.sources)
    assert "http://" not in source and "https://" not in source


def test_hostile_names_only_escaped(page: tuple[str, Page]) -> None:
    source, parsed = page
    assert HOSTILE_LAYER not in source and HOSTILE_TASK not in source
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in source
    assert "&quot;&gt;&lt;img src=x&gt;" in source
    assert all(s.startswith("data:image/png;base64,") for s in parsed.sources)  # no <img src=x>
    text = " ".join(parsed.text)
    assert HOSTILE_LAYER in text and HOSTILE_TASK in text  # shown to the reader as text


def test_minimal_run_page(minimal_run: Path, tmp_path: Path) -> None:
    run = open_run(minimal_run)
    write_html(run, analyze_run(run), tmp_path / "r.html")
    assert "no named tasks recorded" in (tmp_path / "r.html").read_text()
