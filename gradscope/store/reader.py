"""Opening and validating a run directory; reading its tables with pyarrow.

A run opens only if its meta.json parses (at most 32 MiB) and its format version is one
this gradscope reads; malformed fields are ignored with a line in ``Run.problems``
(store/validate.py). Shards are checked one by one: footer and column types when the run
opens, data (Parquet page checksums where the shard has them, decoding) when read. A shard
that fails is set aside with one line in ``Run.problems`` naming it and why, and the rest
of the run is still read; a row group is read whole or not at all.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from gradscope.errors import GradscopeError, os_error_line, short_path
from gradscope.store.meta import EVENTS_FILE, META_FILE, open_regular, read_meta
from gradscope.store.schema import ADDED, FORMAT_VERSION, TABLES, type_mismatch
from gradscope.store.validate import clean_meta, parse_events

MAX_EVENTS_BYTES = 64 * 1024 * 1024


@dataclass
class Run:
    """A validated run directory. Tables are read lazily, only the columns asked for."""

    path: Path
    meta: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    _damaged: set[str] = field(default_factory=set, repr=False)
    _events: list[dict[str, Any]] | None = field(default=None, repr=False)
    _datasets: dict[str, ds.FileSystemDataset | None] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    def has(self, table: str) -> bool:
        return self.dataset(table) is not None

    def dataset(self, table: str) -> ds.FileSystemDataset | None:
        """The pyarrow dataset over the table's whole shards, or None when it has none."""
        if table not in self._datasets:
            self._datasets[table] = self._open_dataset(table)
        return self._datasets[table]

    def table(
        self, table: str, columns: Sequence[str] | None = None, filter: Any = None
    ) -> pd.DataFrame:
        """The table as a DataFrame (empty, with the schema's columns, when absent);
        damaged shards are skipped as in ``record_batches``."""
        names = list(columns) if columns is not None else TABLES[table].names
        schema = pa.schema([TABLES[table].field(name) for name in names])
        read = pa.Table.from_batches(list(self.record_batches(table, names)), schema=schema)
        return (read if filter is None else read.filter(filter)).to_pandas()

    def ranks(self, table: str) -> list[int]:
        """The ranks that wrote readable shards of the table (from their rank-R folders)."""
        dataset = self.dataset(table)
        return [] if dataset is None else sorted({_rank_of(f) for f in dataset.files})

    def record_batches(
        self,
        table: str,
        columns: Sequence[str] | None = None,
        batch_rows: int = 65_536,
        rank: int | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Stream the table (one rank's shards when ``rank`` is given) as Arrow record
        batches of at most ``batch_rows`` rows, in the order they were written.

        Shard by shard with ``ParquetFile.iter_batches``: memory stays near one batch
        whatever the table's size (a dataset scanner reads ahead several hundred MB).
        """
        dataset = self._scoped(table, rank)
        if dataset is None:
            return
        names = list(columns) if columns is not None else TABLES[table].names
        schema = pa.schema([TABLES[table].field(name) for name in names])
        for shard in dataset.files:
            for group in self._row_groups(shard, names, schema):
                yield from group.to_batches(max_chunksize=batch_rows)

    def _row_groups(self, shard: str, names: list[str], schema: pa.Schema) -> Iterator[pa.Table]:
        """The shard's row groups, each decoded (checksums verified) and cast whole; at the
        first that fails, one problem line and the rest of the shard is skipped."""
        if shard in self._damaged:
            return
        try:
            parquet = pq.ParquetFile(shard, page_checksum_verification=True)
            present = [n for n in names if n in parquet.schema_arrow.names]
            for index in range(parquet.num_row_groups):
                yield _with_added(parquet.read_row_group(index, columns=present), schema)
        except (OSError, ValueError, pa.ArrowException) as err:
            self._damaged.add(shard)
            where = Path(shard).relative_to(self.path)
            self.problems.append(f"{where}: damaged shard, its unread rows skipped ({_one_line(err)})")

    def count(self, table: str, rank: int | None = None) -> int:
        dataset = self._scoped(table, rank)
        return 0 if dataset is None else dataset.count_rows()

    def _scoped(self, table: str, rank: int | None) -> ds.FileSystemDataset | None:
        dataset = self.dataset(table)
        if dataset is None or rank is None:
            return dataset
        files = [f for f in dataset.files if _rank_of(f) == rank]
        return ds.dataset(files, schema=TABLES[table], format="parquet") if files else None

    def events(self) -> list[dict[str, Any]]:
        """The recorder's events (warnings, disabled hooks): JSON objects only, at most
        64 MiB read; other lines are skipped with one problem line."""
        if self._events is None:
            try:
                with open_regular(self.path / EVENTS_FILE) as handle:
                    text = handle.read(MAX_EVENTS_BYTES).decode("utf-8", errors="replace")
            except FileNotFoundError:
                text = ""
            except OSError as err:
                text = ""
                self.problems.append(f"{EVENTS_FILE}: unreadable ({os_error_line(err)}); skipped")
            except ValueError as err:
                text = ""
                self.problems.append(f"{EVENTS_FILE}: {err}; skipped")
            self._events, problems = parse_events(text.splitlines(), EVENTS_FILE)
            self.problems.extend(problems)
        return self._events

    def _open_dataset(self, table: str) -> ds.FileSystemDataset | None:
        folder = self.path / table
        if not folder.is_dir():
            return None
        shards = sorted(folder.glob("rank-*/part-*.parquet"))
        files = [str(f) for f in shards if f.parent.name[5:].isdigit() and self._valid(f)]
        if not files:
            return None
        return ds.dataset(files, schema=TABLES[table], format="parquet")

    def _valid(self, shard: Path) -> bool:
        table = shard.parent.parent.name
        try:
            schema = pq.read_schema(shard)
        except (OSError, ValueError, pa.ArrowException) as err:
            where = shard.relative_to(self.path)
            self.problems.append(f"{where}: unreadable shard skipped ({_one_line(err)})")
            return False
        mismatch = type_mismatch(schema, TABLES[table], ADDED.get(table, {}))
        if mismatch:
            self.problems.append(f"{shard.relative_to(self.path)}: shard {mismatch}; skipped")
            return False
        return True


def _with_added(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with the columns of ``schema`` it lacks (added by a later format, see
    ``schema.ADDED``) as nulls, in ``schema``'s order, cast to its types."""
    for field_ in schema:
        if field_.name not in table.column_names:
            table = table.append_column(field_, pa.nulls(len(table), field_.type))
    return table.select(schema.names).cast(schema)


def _rank_of(shard: str) -> int:
    """R of a shard path .../rank-R/part-N.parquet."""
    return int(Path(shard).parent.name.removeprefix("rank-"))


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def check_directory(path: str | Path, what: str = "run directory") -> Path:
    """``path`` as a Path when it is a readable directory, else a one-line GradscopeError
    that says why (missing, a file, a symlink loop, a name too long, no permission)."""
    text = str(path)
    shown = short_path(text)
    if not text or "\0" in text:
        raise GradscopeError(f"{what} path is empty or holds a NUL byte")
    try:
        is_dir = stat.S_ISDIR(os.stat(text).st_mode)
    except OSError as err:
        if err.errno == errno.ENOENT:
            raise GradscopeError(f"no such {what}: {shown}") from None
        raise GradscopeError(f"cannot open {what} {shown}: {os_error_line(err)}") from None
    if not is_dir:
        raise GradscopeError(f"{shown} is not a directory (a {what} is expected)")
    return Path(text)


def _load_meta(run_dir: Path) -> dict[str, Any]:
    meta_path = run_dir / META_FILE
    try:
        return read_meta(run_dir)
    except FileNotFoundError:
        raise GradscopeError(f"{run_dir} is not a gradscope run (no {META_FILE})") from None
    except IsADirectoryError:
        raise GradscopeError(f"{meta_path} is a directory, not a file") from None
    except OSError as err:
        raise GradscopeError(f"cannot read {meta_path}: {os_error_line(err)}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GradscopeError(f"{meta_path} is not valid JSON: {_one_line(err)}") from None
    except ValueError as err:
        raise GradscopeError(f"{meta_path}: {_one_line(err)}") from None


def _stale_problem(meta: dict[str, Any]) -> str | None:
    """A 'running' run whose gradscope record process is gone from this host."""
    launcher = meta.get("launcher")
    if meta.get("status") != "running" or not isinstance(launcher, dict):
        return None
    pid, host = launcher.get("pid"), launcher.get("host")
    if not isinstance(pid, int) or pid <= 0 or host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
        return None
    except ProcessLookupError:
        return (f"meta.json says running, but gradscope record (pid {pid}) is gone: the run ended "
                "without being finalised (killed?); its shards are read as they are")
    except OSError:
        return None


def open_run(path: str | Path) -> Run:
    """Open a run directory, or raise GradscopeError with one line naming the problem."""
    run_dir = check_directory(path)
    meta = _load_meta(run_dir)
    meta_path = run_dir / META_FILE
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise GradscopeError(f"{meta_path} has no integer format_version")
    if version > FORMAT_VERSION:
        raise GradscopeError(
            f"{run_dir} uses run format v{version}; this gradscope reads up to "
            f"v{FORMAT_VERSION}: upgrade gradscope"
        )
    problems = clean_meta(meta)
    stale = _stale_problem(meta)
    return Run(path=run_dir, meta=meta, problems=problems + ([stale] if stale else []))
