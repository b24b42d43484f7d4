"""gradscope.analysis.run streams SAMPLES through the reducer: its analysis must equal the
analysis of every table held whole, for any batch size, and use the lowest rank only."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import gradscope.analysis
from gradscope.analysis import run as analysis_run
from gradscope.analysis.engine import Analysis, analyze_tables
from gradscope.analysis.types import FAMILIES
from gradscope.errors import GradscopeError
from gradscope.store.reader import open_run
from gradscope.store.schema import TABLES


def _whole(run_dir: Path) -> Analysis:
    run = open_run(run_dir)
    tables = {name: run.table(name) for name in TABLES if run.has(name)}
    return analyze_tables(tables, run=run.name, meta=run.meta)


def _assert_same(streamed: Analysis, whole: Analysis) -> None:
    keys = ["family", "name", "scope", "key", "step"]
    a = streamed.metrics.sort_values(keys, ignore_index=True)
    b = whole.metrics.sort_values(keys, ignore_index=True)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9)
    for mine, theirs in zip(streamed.verdicts, whole.verdicts, strict=True):
        assert (mine.family, mine.level, mine.summary, mine.steps) == (
            theirs.family, theirs.level, theirs.summary, theirs.steps)
        assert mine.value == pytest.approx(theirs.value, rel=1e-9, nan_ok=True)


@pytest.mark.parametrize("batch_rows", [5, 1_000_000])
@pytest.mark.parametrize("fixture", ["synthetic_run", "recorded_run"])
def test_streamed_analysis_equals_whole_tables(
    fixture: str, batch_rows: int, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = request.getfixturevalue(fixture)
    monkeypatch.setattr(analysis_run, "BATCH_ROWS", batch_rows)
    streamed = analysis_run.analyze_run(open_run(run_dir))
    assert len(streamed.metrics[streamed.metrics["name"] == "gwa"])
    _assert_same(streamed, _whole(run_dir))


def test_only_the_lowest_rank_samples_are_analysed(synthetic_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / synthetic_run.name  # same run name: the metrics tables compare whole
    shutil.copytree(synthetic_run, run_dir)
    shard = run_dir / "samples" / "rank-0" / "part-000000.parquet"
    other = pq.read_table(shard)
    other = other.set_column(other.schema.get_field_index("rank"), "rank", pc.add(other["rank"], 1))
    other = other.set_column(other.schema.get_field_index("norm2"), "norm2", pc.multiply(other["norm2"], 9.0))
    (run_dir / "samples" / "rank-1").mkdir()
    pq.write_table(other, run_dir / "samples" / "rank-1" / "part-000000.parquet")
    run = open_run(run_dir)
    assert run.ranks("samples") == [0, 1]
    _assert_same(analysis_run.analyze_run(run), analysis_run.analyze_run(open_run(synthetic_run)))


def test_public_analyze_takes_a_run_directory(synthetic_run: Path, tmp_path: Path) -> None:
    result = gradscope.analysis.analyze(synthetic_run)
    assert [v.family for v in result.verdicts] == list(FAMILIES)
    assert set(result.metrics["family"]) == set(FAMILIES)
    with pytest.raises(GradscopeError, match="no such run directory"):
        gradscope.analysis.analyze(tmp_path / "missing")
