"""Background Parquet writer: the training thread hands over rows, a daemon thread writes.

The hand-over queue is bounded. When it is full the batch is dropped and counted (never
blocks training). Each table is buffered per rank and written as a shard when it holds
``shard_rows`` rows, on a timer, and at close. The timer starts at 1 s and doubles up to
``flush_seconds`` (1, 2, 4, 8, 10, 10, ... s), so a run killed in its first seconds still
keeps whole shards of its first steps. Shards are written to ``part-NNNNNN.parquet.tmp``
first (with Parquet page checksums), renamed when whole, so a crash leaves only whole
shards; a failed write removes its temporary file.

``close`` never holds the process longer than its timeout (``CLOSE_TIMEOUT_S``): a stuck
write is left to its daemon thread, and whatever was not written is counted per table in
``unwritten()`` (meta.json's ``unwritten``). ``close`` takes no lock the training thread
might hold, so it may run from a signal handler.
"""

from __future__ import annotations

import contextlib
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


def _close_timeout() -> float:
    try:
        return max(0.0, float(os.environ.get("GRADSCOPE_WRITER_CLOSE_TIMEOUT", "10")))
    except ValueError:
        return 10.0


CLOSE_TIMEOUT_S = _close_timeout()


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
        folder: str | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.rank = rank
        self.folder = folder or f"rank-{rank}"  # rank_claim names another one on a clash
        self.shard_rows = shard_rows
        self.flush_seconds = flush_seconds
        self.dropped = 0
        self.failed_tables: set[str] = set()
        self._on_error = on_error
        self._queue: queue.Queue[Batch] = queue.Queue(maxsize=max_queue)
        self._buffers: dict[str, list[pa.RecordBatch]] = {}
        self._buffered_rows: dict[str, int] = {}
        self._rows_in: dict[str, int] = {}
        self._rows_out: dict[str, int] = {}
        self._reasons: dict[str, str] = {}
        self._unconverted = 0  # batches whose conversion raised
        self._part: dict[str, int] = {}
        self._last_flush = time.monotonic()
        self._interval = min(1.0, flush_seconds)
        self._stopping = False  # plain attributes: set and read without locks
        self._abandoned: str | None = None
        self._thread = threading.Thread(target=self._run, name="gradscope-writer", daemon=True)
        self._thread.start()

    def put(self, batch: Batch) -> None:
        """Queue a batch; drops it (and counts) when the queue is full."""
        try:
            self._queue.put_nowait(batch)
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float | None = None) -> bool:
        """Write everything queued, waiting at most ``timeout`` seconds (default
        CLOSE_TIMEOUT_S). Returns False when the writer had to be abandoned."""
        timeout = CLOSE_TIMEOUT_S if timeout is None else timeout
        self._stopping = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abandoned = f"still writing when the writer's close timed out after {timeout:g} s"
            return False
        return True

    def unwritten(self) -> dict[str, dict[str, Any]]:
        """What never reached a whole shard: ``{table: {"rows": N, "reason": ...}}``, plus
        ``"unconverted": {"batches": M, "reason": ...}`` for steps never turned into rows."""
        lost: dict[str, dict[str, Any]] = {}
        for table, rows in self._rows_in.items():
            missing = rows - self._rows_out.get(table, 0)
            if missing > 0:
                reason = self._reasons.get(table) or self._abandoned or "not written"
                lost[table] = {"rows": missing, "reason": reason}
        queued = len(self._queue.queue) if self._abandoned else 0  # no lock: may run in a handler
        reasons = [
            (self.dropped, "hand-over queue full: the disk fell behind training"),
            (queued, self._abandoned or ""),
            (self._unconverted, "converting the step's values failed"),
        ]
        batches = sum(count for count, _ in reasons)
        if batches:
            lost["unconverted"] = {
                "batches": batches, "reason": "; ".join(r for count, r in reasons if count)
            }
        return lost

    def _run(self) -> None:
        while True:
            try:
                item: Batch | None = self._queue.get(timeout=0.2)
            except queue.Empty:
                item = None
            if item is not None:
                self._convert(item)
            if self._stopping and item is None:  # the queue is drained
                self._flush_all()
                return
            if time.monotonic() - self._last_flush > self._interval:
                self._flush_all()
                self._interval = min(2 * self._interval, self.flush_seconds)

    def _convert(self, item: Batch) -> None:
        try:
            tables = item() if callable(item) else item
        except Exception as err:  # noqa: BLE001 - the writer must never take training down
            self._unconverted += 1
            self._on_error(f"converting a step's values failed: {type(err).__name__}: {err}")
            return
        for table, rows in tables.items():
            try:
                self._append(table, rows)
            except Exception as err:  # noqa: BLE001 - one table failing keeps the others
                self._fail(table, err)

    def _append(self, table: str, rows: Rows) -> None:
        if not rows:
            return
        # Counted before the conversion: rows that do not fit the schema are lost rows too
        # (they used to leave `unwritten` empty while the table stopped).
        count = len(next(iter(rows.values())))
        self._rows_in[table] = self._rows_in.get(table, 0) + count
        batch = pa.RecordBatch.from_pydict(rows, schema=TABLES[table])
        if table in self.failed_tables:
            return
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
        if self._abandoned:
            return  # close gave up on us: count, do not write behind the process's back
        batches = self._buffers.pop(table, [])
        self._buffered_rows[table] = 0
        if not batches:
            return
        arrow_table = pa.Table.from_batches(batches, schema=TABLES[table])
        folder = self.run_dir / table / self.folder
        folder.mkdir(parents=True, exist_ok=True)
        part = self._part.get(table, 0)
        final = folder / f"part-{part:06d}.parquet"
        tmp = final.with_name(final.name + ".tmp")
        try:
            pq.write_table(arrow_table, tmp, write_page_checksum=True)
            os.replace(tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._part[table] = part + 1
        self._rows_out[table] = self._rows_out.get(table, 0) + arrow_table.num_rows

    def _fail(self, table: str, err: Exception) -> None:
        """Stop writing ``table`` (the others go on) and report it once."""
        self.failed_tables.add(table)
        self._buffers.pop(table, None)
        self._buffered_rows[table] = 0
        self._reasons.setdefault(table, f"{type(err).__name__}: {err}")
        self._on_error(f"writing {table} stopped: {type(err).__name__}: {err}")
