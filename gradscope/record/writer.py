"""Background Parquet writer: the training thread hands over rows, a daemon thread writes.

The hand-over queue is bounded. When it is full the batch is dropped and counted (never
blocks training); the count goes into the run's events. Each table is buffered per rank
and written as a shard when it holds ``shard_rows`` rows, every ``flush_seconds``, and
at close: to ``part-NNNNNN.parquet.tmp`` first, renamed when whole, so a crash leaves
only whole shards.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gradscope.store.schema import TABLES


def list_column(matrix: np.ndarray) -> pa.Array:
    """A [N, k] array as an Arrow list<float32> column (one k-list per row)."""
    rows, width = matrix.shape
    offsets = pa.array(np.arange(0, (rows + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1)))

Rows = dict[str, Any]  # column name -> list, numpy array or pyarrow array
# A batch maps table names to rows, or is a callable that produces that mapping in the
# writer thread (where device-to-host waits and conversions happen, off the training thread).
Batch = dict[str, Rows] | Callable[[], dict[str, Rows]]


class ShardWriter:
    """Owns one rank's shard folders under ``run_dir``; thread-safe ``put``."""

    def __init__(
        self,
        run_dir: Path,
        rank: int,
        *,
        max_queue: int = 256,
        shard_rows: int = 200_000,
        flush_seconds: float = 10.0,
        on_error: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.run_dir = run_dir
        self.rank = rank
        self.shard_rows = shard_rows
        self.flush_seconds = flush_seconds
        self.dropped = 0
        self.failed_tables: set[str] = set()
        self._on_error = on_error
        self._queue: queue.Queue[Batch | None] = queue.Queue(maxsize=max_queue)
        self._buffers: dict[str, list[pa.RecordBatch]] = {}
        self._buffered_rows: dict[str, int] = {}
        self._part: dict[str, int] = {}
        self._last_flush = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="gradscope-writer", daemon=True)
        self._thread.start()

    def put(self, batch: Batch) -> None:
        """Queue a batch; drops it (and counts) when the queue is full."""
        try:
            self._queue.put_nowait(batch)
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 60.0) -> None:
        """Write everything queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                item = {}  # a tick: time-based flush only
            if item is None:
                self._flush_all()
                return
            try:
                for table, rows in (item() if callable(item) else item).items():
                    self._append(table, rows)
            except Exception as err:  # noqa: BLE001 - the writer must never take training down
                self._fail("rows", err)
            if time.monotonic() - self._last_flush > self.flush_seconds:
                self._flush_all()

    def _append(self, table: str, rows: Rows) -> None:
        if not rows or table in self.failed_tables:
            return
        batch = pa.RecordBatch.from_pydict(rows, schema=TABLES[table])
        self._buffers.setdefault(table, []).append(batch)
        self._buffered_rows[table] = self._buffered_rows.get(table, 0) + batch.num_rows
        if self._buffered_rows[table] >= self.shard_rows:
            self._flush(table)

    def _flush_all(self) -> None:
        for table in list(self._buffers):
            try:
                self._flush(table)
            except Exception as err:  # noqa: BLE001 - one table failing keeps the others
                self._fail(table, err)
        self._last_flush = time.monotonic()

    def _flush(self, table: str) -> None:
        batches = self._buffers.pop(table, [])
        self._buffered_rows[table] = 0
        if not batches:
            return
        arrow_table = pa.Table.from_batches(batches, schema=TABLES[table])
        folder = self.run_dir / table / f"rank-{self.rank}"
        folder.mkdir(parents=True, exist_ok=True)
        part = self._part.get(table, 0)
        self._part[table] = part + 1
        final = folder / f"part-{part:06d}.parquet"
        tmp = final.with_name(final.name + ".tmp")
        pq.write_table(arrow_table, tmp)
        os.replace(tmp, final)

    def _fail(self, table: str, err: Exception) -> None:
        """Stop writing ``table`` (the others go on) and report it once."""
        self.failed_tables.add(table)
        self._buffers.pop(table, None)
        self._on_error(f"writing {table} stopped: {type(err).__name__}: {err}")
