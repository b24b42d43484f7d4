"""A two-rank run read from disk: streamed (ranks merged batch by batch) equals the tables
held whole, and duplicating every sample on a second rank doubles m-coherence exactly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from gradscope.analysis import run as analysis_run
from gradscope.store.reader import open_run
from tests.report.conftest import make_run
from tests.report.test_analyze_run import _assert_same, _whole


def _two_ranks(source: Path, target: Path) -> Path:
    """Rank 1 a copy of rank 0 (same samples, same all-reduced gradient): the global batch
    holds every sample twice, so S1 = |2 G|^2, S2 doubles and m doubles."""
    shutil.copytree(source, target)
    for table in ("steps", "layers", "samples", "gram", "tasks"):
        shard = target / table / "rank-0" / "part-000000.parquet"
        if not shard.exists():
            continue
        rows = pq.read_table(shard)
        rows = rows.set_column(rows.schema.get_field_index("rank"), "rank", pc.add(rows["rank"], 1))
        (target / table / "rank-1").mkdir()
        pq.write_table(rows, target / table / "rank-1" / "part-000000.parquet")
    return target


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    single = make_run(tmp_path / "single", tasks=(), spike_at=None)
    return single, _two_ranks(single, tmp_path / "double")


@pytest.mark.parametrize("batch_rows", [7, 1_000_000])
def test_streamed_ranks_equal_whole_tables(runs, batch_rows, monkeypatch):
    monkeypatch.setattr(analysis_run, "BATCH_ROWS", batch_rows)
    _assert_same(analysis_run.analyze_run(open_run(runs[1])), _whole(runs[1]))


def test_duplicated_samples_double_m_coherence(runs):
    single, double = (analysis_run.analyze_run(open_run(r)).metrics for r in runs)
    pick = lambda m, name: m[(m["name"] == name) & (m["scope"] == "model")].set_index("step")["value"]  # noqa: E731
    ratio = pick(double, "m_coherence") / pick(single, "m_coherence")
    assert ratio.dropna().round(9).eq(2.0).all() and len(ratio.dropna()) > 10
    assert (pick(double, "batch_size") == 2 * pick(single, "batch_size")).all()
    steps = analysis_run.analyze_run(open_run(runs[1])).recorded_steps
    assert steps == open_run(runs[0]).table("steps")["step"].nunique()
