"""meta.json: the run's identity card, read and written atomically (see docs/run-format.md).

Writes go to a temporary file in the same folder, are fsync'd, then renamed over
meta.json (``os.replace`` is atomic on POSIX), so a reader or a crash sees the old card
or the new one, never half of one. Whatever goes wrong (ENOSPC, a read-only filesystem,
EIO) the temporary file is removed before the error is raised. When the disk is full,
a small reserve file made at the start of the run is given up to let the final card
through (see docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import stat
import time
from pathlib import Path
from typing import Any

from gradscope import __version__
from gradscope.store.schema import FORMAT_VERSION

META_FILE = "meta.json"
EVENTS_FILE = "events.jsonl"
# Two reserves: one for the recording process's last meta.json, one for gradscope record's.
RESERVE_FILES = (".gradscope-reserve-1", ".gradscope-reserve-2")
RESERVE_BYTES = 256 * 1024  # room for the final meta.json of a run with a large layer table
MAX_META_BYTES = 32 * 1024 * 1024  # a larger meta.json is refused unread


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def new_meta(command: list[str], config: dict[str, Any]) -> dict[str, Any]:
    """The fields every run starts with; the recording process adds torch and layer info."""
    return {
        "format_version": FORMAT_VERSION,
        "gradscope_version": __version__,
        "python_version": platform.python_version(),
        "command": command,
        "cwd": os.getcwd(),
        "started": now_iso(),
        "ended": None,
        "status": "running",
        "exit_code": None,
        "config": config,
        "world_size": 1,
        "layers": [],
        "failures": [],
    }


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temporary name in the same folder, fsync, then rename over the target.

    Raises OSError (or TypeError/ValueError for a payload JSON cannot hold); no
    temporary file is left behind either way.
    """
    data = json.dumps(payload, indent=2, default=str).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def make_reserve(run_dir: Path) -> None:
    """Set aside RESERVE_BYTES twice in the run directory (best effort) for final meta.json writes."""
    for name in RESERVE_FILES:
        with contextlib.suppress(OSError), open(run_dir / name, "wb") as handle:
            handle.write(b"\0" * RESERVE_BYTES)


def drop_reserve(run_dir: Path) -> bool:
    """Give up one reserve file (True), or say there was none left (False)."""
    for name in RESERVE_FILES:
        try:
            os.unlink(run_dir / name)
            return True
        except OSError:
            continue
    return False


def drop_all_reserves(run_dir: Path) -> None:
    while drop_reserve(run_dir):
        pass


def open_regular(path: Path) -> Any:
    """``open(path, "rb")`` for a regular file only: a FIFO or device named meta.json or
    events.jsonl would block or never end (ValueError; opened non-blocking to check)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path.name} is not a regular file")
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_meta(run_dir: Path) -> dict[str, Any]:
    """meta.json as a dict; ValueError when it is too large, not JSON or not an object."""
    with open_regular(run_dir / META_FILE) as handle:
        data = handle.read(MAX_META_BYTES + 1)
    if len(data) > MAX_META_BYTES:
        raise ValueError(f"{META_FILE} is larger than {MAX_META_BYTES >> 20} MiB")
    try:
        meta = json.loads(data.decode("utf-8"))  # JSONDecodeError, UnicodeDecodeError: ValueErrors
    except RecursionError:
        raise ValueError(f"{META_FILE} is nested too deeply") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{META_FILE} does not hold a JSON object")
    return meta


def update_meta(run_dir: Path, **fields: Any) -> None:
    """Read-modify-write of meta.json; lists under ``failures`` are appended, not replaced.

    On ENOSPC one reserve file is given up and the write tried once more.
    """
    meta = read_meta(run_dir)
    for key, value in fields.items():
        if key == "failures" and isinstance(meta.get("failures"), list):
            meta["failures"].extend(value)
        else:
            meta[key] = value
    try:
        write_json_atomic(run_dir / META_FILE, meta)
    except OSError as err:
        if err.errno != errno.ENOSPC or not drop_reserve(run_dir):
            raise
        write_json_atomic(run_dir / META_FILE, meta)


def append_event(run_dir: Path, event: dict[str, Any]) -> None:
    """One JSON object per line; small appends from several processes stay whole lines."""
    line = json.dumps({"time": now_iso(), **event}, default=str) + "\n"
    with open(run_dir / EVENTS_FILE, "a", encoding="utf-8") as handle:
        handle.write(line)


def claim_run_dir(run_dir: Path, force: bool) -> None:
    """Refuse (GradscopeError, before any training) a run directory that would be mixed
    with an earlier run's files, unless ``force``."""
    from gradscope.errors import GradscopeError

    if run_dir.exists() and not run_dir.is_dir():
        raise GradscopeError(f"run directory {run_dir} is a file")
    if not force and run_dir.is_dir() and any(run_dir.iterdir()):
        raise GradscopeError(
            f"run directory {run_dir} is not empty: pass force=True to reuse it (its files are mixed "
            "with this run's), or choose another run_dir"
        )
