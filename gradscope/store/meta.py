"""meta.json: the run's identity card, read and written atomically (see docs/run-format.md)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from gradscope import __version__
from gradscope.store.schema import FORMAT_VERSION

META_FILE = "meta.json"
EVENTS_FILE = "events.jsonl"


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
    """Write to a temporary name in the same folder, then rename over the target."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)


def read_meta(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / META_FILE).read_text())


def update_meta(run_dir: Path, **fields: Any) -> None:
    """Read-modify-write of meta.json; lists under ``failures`` are appended, not replaced."""
    meta = read_meta(run_dir)
    for key, value in fields.items():
        if key == "failures":
            meta.setdefault("failures", []).extend(value)
        else:
            meta[key] = value
    write_json_atomic(run_dir / META_FILE, meta)


def append_event(run_dir: Path, event: dict[str, Any]) -> None:
    """One JSON object per line; small appends from several processes stay whole lines."""
    line = json.dumps({"time": now_iso(), **event}, default=str) + "\n"
    with open(run_dir / EVENTS_FILE, "a", encoding="utf-8") as handle:
        handle.write(line)
