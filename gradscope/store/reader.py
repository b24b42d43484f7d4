"""Opening and validating a run directory; reading its tables with pyarrow datasets.

A run opens only if its meta.json parses and its format version is one this gradscope
reads. Shards are checked one by one (footer and schema): a corrupt or foreign shard is
set aside in ``Run.problems`` and the rest of the run is still read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from gradscope.errors import GradscopeError
from gradscope.store.meta import EVENTS_FILE, META_FILE
from gradscope.store.schema import ADDED, FORMAT_VERSION, TABLES


@dataclass
class Run:
    """A validated run directory. Tables are read lazily, only the columns asked for."""

    path: Path
    meta: dict[str, Any]
    problems: list[str] = field(default_factory=list)
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
        """The table as a DataFrame (empty, with the schema's columns, when absent)."""
        dataset = self.dataset(table)
        names = list(columns) if columns is not None else TABLES[table].names
        if dataset is None:
            return TABLES[table].empty_table().select(names).to_pandas()
        return dataset.to_table(columns=names, filter=filter).to_pandas()

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
            parquet = pq.ParquetFile(shard)
            present = [n for n in names if n in parquet.schema_arrow.names]
            for batch in parquet.iter_batches(batch_size=batch_rows, columns=present):
                frame = pa.Table.from_batches([batch])
                for name in names:  # a column added by a later format (ADDED): nulls
                    if name not in present:
                        field_ = schema.field(name)
                        frame = frame.append_column(field_, pa.nulls(len(frame), field_.type))
                yield from frame.select(names).cast(schema).to_batches()

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
        """The recorder's events (warnings, disabled hooks); unreadable lines are skipped."""
        path = self.path / EVENTS_FILE
        if not path.exists():
            return []
        events = []
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                self.problems.append(f"{EVENTS_FILE} line {number} is not JSON; skipped")
        return events

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
        except (OSError, pa.ArrowException) as err:
            self.problems.append(f"{shard.relative_to(self.path)}: unreadable shard skipped ({err})")
            return False
        missing = set(TABLES[table].names) - set(schema.names) - set(ADDED.get(table, {}))
        if missing:
            self.problems.append(
                f"{shard.relative_to(self.path)}: shard lacks columns {sorted(missing)}; skipped"
            )
            return False
        return True


def _rank_of(shard: str) -> int:
    """R of a shard path .../rank-R/part-N.parquet."""
    return int(Path(shard).parent.name.removeprefix("rank-"))


def open_run(path: str | Path) -> Run:
    """Open a run directory, or raise GradscopeError with one line naming the problem."""
    run_dir = Path(path)
    if not run_dir.exists():
        raise GradscopeError(f"no such run directory: {run_dir}")
    if not run_dir.is_dir():
        raise GradscopeError(f"{run_dir} is a file, not a run directory")
    meta_path = run_dir / META_FILE
    if not meta_path.is_file():
        raise GradscopeError(f"{run_dir} is not a gradscope run (no {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GradscopeError(f"{meta_path} is not valid JSON: {err}") from None
    if not isinstance(meta, dict):
        raise GradscopeError(f"{meta_path} does not hold a JSON object")
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise GradscopeError(f"{meta_path} has no integer format_version")
    if version > FORMAT_VERSION:
        raise GradscopeError(
            f"{run_dir} uses run format v{version}; this gradscope reads up to "
            f"v{FORMAT_VERSION}: upgrade gradscope"
        )
    return Run(path=run_dir, meta=meta)
