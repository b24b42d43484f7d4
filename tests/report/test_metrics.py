"""`gradscope metrics`: the tidy table as JSON, CSV and Parquet."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from typer.testing import CliRunner

from gradscope.analysis.types import METRIC_COLUMNS
from gradscope.cli import app

runner = CliRunner()


def test_json_records_parse(synthetic_run: Path) -> None:
    result = runner.invoke(app, ["metrics", str(synthetic_run)])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert isinstance(records, list) and records
    assert set(records[0]) == set(METRIC_COLUMNS)
    assert {r["family"] for r in records} == {"conflict", "coherence", "alignment", "noise", "stability"}


def test_family_filter_and_csv(synthetic_run: Path) -> None:
    result = runner.invoke(app, ["metrics", str(synthetic_run), "--family", "noise", "--format", "csv"])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(io.StringIO(result.stdout), keep_default_na=False)
    assert list(frame.columns) == list(METRIC_COLUMNS)
    assert set(frame["family"]) == {"noise"}


def test_parquet_to_file(synthetic_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.parquet"
    result = runner.invoke(app, ["metrics", str(synthetic_run), "--format", "parquet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.column_names == list(METRIC_COLUMNS) and table.num_rows > 100


def test_nan_is_null_in_json(minimal_run: Path) -> None:
    result = runner.invoke(app, ["metrics", str(minimal_run), "--family", "stability"])
    records = json.loads(result.stdout)  # json.loads rejects NaN only with a hook; check text
    assert "NaN" not in result.stdout and records


def test_unknown_family_is_exit_2(synthetic_run: Path) -> None:
    from tests.report.test_check import run_main

    code, _, err = run_main(["metrics", str(synthetic_run), "--family", "nope"])
    assert code == 2 and "'nope' is not one of 'conflict'" in err  # typer's choices
