"""Ways a run directory gets damaged, each applied to a copy of a good run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def _shard(run: Path, table: str) -> Path:
    return sorted((run / table).glob("rank-*/part-*.parquet"))[0]


def _overwrite(path: Path, offset_fraction: float, data: bytes) -> None:
    """Overwrite bytes inside the data pages (the footer, at the end, stays whole)."""
    size = path.stat().st_size
    footer = pq.read_metadata(path).serialized_size + 8
    offset = 4 + int((size - footer - 4 - len(data)) * offset_fraction)
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


def ff_bytes(run: Path) -> str:
    _overwrite(_shard(run, "samples"), 0.5, b"\xff" * 64)
    return "samples"


def random_page_bytes(run: Path) -> str:
    _overwrite(_shard(run, "samples"), 0.3, bytes(range(7, 250, 3)) * 4)
    return "samples"


def wrong_type_column(run: Path) -> str:
    shard = _shard(run, "samples")
    table = pq.read_table(shard)
    index = table.schema.get_field_index("norm2")
    table = table.set_column(index, "norm2", pc.cast(table["norm2"], pa.string()))
    pq.write_table(table, shard)
    return "samples"


def truncated(run: Path) -> str:
    shard = _shard(run, "steps")
    shard.write_bytes(shard.read_bytes()[:100])
    return "steps"


SHARD_DAMAGE: dict[str, Callable[[Path], str]] = {
    "ff-bytes": ff_bytes,
    "random-page-bytes": random_page_bytes,
    "wrong-type-column": wrong_type_column,
    "truncated": truncated,
}


def _meta_edit(**fields: object) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        meta = json.loads((run / "meta.json").read_text())
        meta.update(fields)
        (run / "meta.json").write_text(json.dumps(meta))

    return edit


def _layer_without_numel(run: Path) -> None:
    meta = json.loads((run / "meta.json").read_text())
    del meta["layers"][0]["numel"]
    (run / "meta.json").write_text(json.dumps(meta))


def _events_line(text: str) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        with open(run / "events.jsonl", "a") as handle:
            handle.write(text + "\n")

    return edit


META_DAMAGE: dict[str, Callable[[Path], None]] = {
    "config-null": _meta_edit(config=None),
    "epoch-starts-strings": _meta_edit(epoch_starts=["a"]),
    "layer-without-numel": _layer_without_numel,
    "layers-not-list": _meta_edit(layers="x"),
    "steps-string": _meta_edit(steps="many"),
    "head-number": _meta_edit(head=5),
    "epochs-garbage": _meta_edit(epochs={"x": "y"}),
    "status-number": _meta_edit(status=5),
    "command-string": _meta_edit(command="python train.py"),
    "events-line-5": _events_line("5"),
    "events-line-garbage": _events_line("{not json"),
    "events-line-list": _events_line("[1, 2]"),
}
# These the reader refuses with one line (exit 2).
META_FATAL: dict[str, Callable[[Path], None]] = {
    "version-string": _meta_edit(format_version="1"),
    "version-future": _meta_edit(format_version=99),
    "not-object": lambda run: (run / "meta.json").write_text("[1, 2]"),
    "not-json": lambda run: (run / "meta.json").write_text("{"),
    "binary": lambda run: (run / "meta.json").write_bytes(b"\xff\xfe\x00" * 10),
    "directory": lambda run: ((run / "meta.json").unlink(), (run / "meta.json").mkdir()),
}
