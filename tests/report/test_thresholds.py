"""One home for thresholds: configs/*.toml agree with gradscope.analysis.thresholds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib

from gradscope.analysis import thresholds
from gradscope.report.check import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "gradscope" / "configs"
_NUMBER = re.compile(r"\s*[-+]?(?:inf|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)$")
_NAME = re.compile(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]+\b|\bVANISH\b|\bEXPLODE\b")
_BARE_NUMBER = re.compile(r"(?<![\w.~])[-+]?\d+(\.\d+)?e-?\d+|(?<![\w\-.])-0\.\d")


@pytest.mark.parametrize("profile", sorted(thresholds.GATES))
def test_every_config_threshold_is_a_thresholds_constant(profile: str) -> None:
    rules = [r for r in load_config(CONFIGS / f"{profile}.toml") if not r.is_verdict]
    found = {_NUMBER.sub("", r.text): r.threshold for r in rules}
    assert found == thresholds.GATES[profile]


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_config_comments_name_constants_not_numbers(path: Path) -> None:
    """Comments refer to thresholds by their constant's name; every name they use exists.
    The only number a comment may spell is Karpathy's ~1e-3, the centre of the band."""
    comments = [line.split("#", 1)[1] for line in path.read_text().splitlines() if "#" in line]
    for comment in comments:
        for name in _NAME.findall(comment):
            assert hasattr(thresholds, name), name
        assert not _BARE_NUMBER.search(comment), comment
    tomllib.loads(path.read_text())  # still valid TOML


def test_band_text_and_verdict_agree() -> None:
    from gradscope.analysis import stability

    assert stability.UPDATE_RATIO_BAND == (thresholds.UPDATE_RATIO.low, thresholds.UPDATE_RATIO.high)
    assert thresholds.UPDATE_RATIO.text() == "1e-05..0.1 (around 0.001)"
    assert thresholds.HISTORY["stability.loss_spike_z"] == ("steps", thresholds.MIN_HISTORY + 1)


def test_html_states_the_verdict_band(synthetic_run: Path, tmp_path: Path) -> None:
    from gradscope.analysis.run import analyze_run
    from gradscope.report.html import render_html
    from gradscope.store.reader import open_run

    run = open_run(synthetic_run)
    page = render_html(run, analyze_run(run))
    assert "is healthy" not in page
