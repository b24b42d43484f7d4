"""The writer and meta.json writes on their own (fast, in-process)."""

from __future__ import annotations

import errno
import json
import os
import threading

import pyarrow.parquet as pq
import pytest

from gradscope.record import writer as writer_module
from gradscope.record.writer import ShardWriter
from gradscope.store import meta as run_meta


def _steps(n: int, start: int = 0) -> dict:
    return {"steps": {"step": list(range(start, start + n)), "rank": [0] * n, "optimizer": [0] * n,
                      "wall_time": [0.0] * n, "step_time": [0.0] * n, "recorder_time": [0.0] * n,
                      "loss": [1.0] * n, "backward_calls": [1] * n, "batch_size": [4] * n,
                      "skipped": [False] * n, "recorded": [True] * n, "grad_norm": [1.0] * n,
                      "loss_scale": [1.0] * n, "per_sample_scale": [1.0] * n, "hparams": ["[]"] * n,
                      "per_sample_scale_source": [""] * n, "grad_norm_preclip": [1.0] * n}}


def test_enospc_removes_the_temp_shard_and_counts_rows(tmp_path, monkeypatch):
    def full(table, where, **kwargs):
        open(where, "wb").write(b"PAR1")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer_module.pq, "write_table", full)
    errors: list[str] = []
    writer = ShardWriter(tmp_path, 0, on_error=errors.append)
    writer.put(_steps(5))
    writer.put(_steps(3, 5))
    assert writer.close(timeout=30)
    reason = "OSError: [Errno 28] No space left on device"
    assert writer.unwritten() == {"steps": {"rows": 8, "reason": reason}}
    assert len(errors) == 1 and not list(tmp_path.rglob("*.tmp"))


def test_stuck_write_is_abandoned_at_the_timeout(tmp_path, monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(writer_module.pq, "write_table", lambda *a, **k: release.wait(60))
    writer = ShardWriter(tmp_path, 0)
    writer.put(_steps(4))
    for _ in range(3):
        writer.put(lambda: _steps(1))
    assert writer.close(timeout=0.5) is False
    lost = writer.unwritten()
    assert lost["steps"]["rows"] >= 4 and "timed out after 0.5 s" in lost["steps"]["reason"]
    release.set()


def test_shards_carry_page_checksums(tmp_path):
    writer = ShardWriter(tmp_path, 0)
    writer.put(_steps(10))
    assert writer.close(timeout=30) and writer.unwritten() == {}
    shard = next(tmp_path.rglob("*.parquet"))
    assert pq.ParquetFile(shard, page_checksum_verification=True).read().num_rows == 10


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EIO])
def test_meta_write_failure_leaves_no_temp_file(tmp_path, monkeypatch, code):
    run_meta.write_json_atomic(tmp_path / "meta.json", {"format_version": 1, "status": "running"})

    def failing(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(run_meta.os, "fsync", failing)
    with pytest.raises(OSError):
        run_meta.update_meta(tmp_path, status="finished")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json"]
    assert json.loads((tmp_path / "meta.json").read_text())["status"] == "running"


def test_enospc_gives_up_a_reserve_and_retries(tmp_path, monkeypatch):
    run_meta.write_json_atomic(tmp_path / "meta.json", {"format_version": 1, "status": "running"})
    run_meta.make_reserve(tmp_path)
    real_fsync, calls = os.fsync, []

    def full_once(fd):
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(run_meta.os, "fsync", full_once)
    run_meta.update_meta(tmp_path, status="finished")
    assert json.loads((tmp_path / "meta.json").read_text())["status"] == "finished"
    assert [p.name for p in tmp_path.glob(".gradscope-reserve-*")] == [".gradscope-reserve-2"]


def test_rows_that_do_not_fit_the_schema_are_counted_as_unwritten(tmp_path):
    """A batch that fails conversion stops its table; its rows used to go uncounted, so
    meta.json said `unwritten: {}` (nothing lost) while the whole table was missing."""
    errors: list[str] = []
    writer = ShardWriter(tmp_path, 0, on_error=errors.append)
    bad = _steps(8)
    del bad["steps"]["per_sample_scale_source"]
    writer.put(bad)
    assert writer.close(timeout=30)
    assert writer.unwritten()["steps"]["rows"] == 8 and "KeyError" in writer.unwritten()["steps"]["reason"]
    assert errors
