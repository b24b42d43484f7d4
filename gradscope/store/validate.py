"""Checking meta.json and events.jsonl as read from disk (written by any gradscope, or damaged).

``clean_meta`` keeps the fields it can trust and replaces or drops the rest, returning a
line per problem: a malformed field never reaches the analysis as a traceback. Only
``format_version`` is fatal (the reader refuses the run with one line).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

STATUSES = ("running", "finished", "crashed", "interrupted")
RECORDING_STATES = ("ok", "never-started", "no-backward", "lost", "unknown")
MAX_EVENTS = 100_000  # events.jsonl lines read; the rest are counted, not parsed
MAX_EVENT_LINE = 64 * 1024


def _int(value: Any, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _str_or_none(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _int_list(value: Any) -> bool:
    return isinstance(value, list) and all(_int(v) for v in value)


def _epochs(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and k.isdigit() and _int(v) for k, v in value.items()
    )


def _unwritten(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(v, dict) and isinstance(v.get("reason", ""), str)
        and all(_int(v[k]) for k in ("rows", "batches") if k in v)
        for v in value.values()
    )


def _recording(value: Any) -> bool:
    return isinstance(value, dict) and value.get("state") in RECORDING_STATES \
        and isinstance(value.get("reason", ""), str)


# field -> (check, replacement when malformed; None removes the field)
FIELDS: dict[str, tuple[Callable[[Any], bool], Any]] = {
    "command": (_str_list, []),
    "config": (lambda v: isinstance(v, dict), {}),
    "world_size": (lambda v: _int(v, 1), 1),
    "steps": (_int, None),
    "head": (_str_or_none, None),
    "epoch_starts": (_int_list, []),
    "epochs": (_epochs, None),
    "steps_per_epoch": (lambda v: _int(v, 1), None),
    "status": (lambda v: v in STATUSES, "unknown"),
    "exit_code": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)), None),
    "failures": (lambda v: isinstance(v, list) and all(isinstance(e, dict) for e in v), []),
    "unwritten": (_unwritten, None),
    "recording": (_recording, None),
    **{name: (_str_or_none, None) for name in (
        "started", "ended", "gradscope_version", "torch_version", "python_version", "cwd",
        "signal", "end_reason")},
}


def clean_meta(meta: dict[str, Any]) -> list[str]:
    """Fix ``meta`` in place; one line per malformed field or layer entry."""
    problems = []
    for name, (check, replacement) in FIELDS.items():
        if name in meta and not check(meta[name]):
            problems.append(f"meta.json field {name!r} is malformed ({_short(meta[name])}); ignored")
            if replacement is None:
                del meta[name]
            else:
                meta[name] = replacement
    if "layers" in meta:
        meta["layers"], bad = _clean_layers(meta["layers"])
        problems += bad
    return problems


def _clean_layers(layers: Any) -> tuple[list[dict[str, Any]], list[str]]:
    if not isinstance(layers, list):
        return [], [f"meta.json field 'layers' is malformed ({_short(layers)}); ignored"]
    kept, problems = [], []
    for index, entry in enumerate(layers):
        reason = _layer_problem(entry)
        if reason:
            problems.append(f"meta.json layers[{index}] {reason}; entry ignored")
            continue
        entry.setdefault("type", "?")
        entry["covered"] = entry.get("covered") is True
        if not isinstance(entry.get("method"), str):
            entry["method"] = "none"
            entry["covered"] = False
        kept.append(entry)
    return kept, problems


def _layer_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return "is not an object"
    if not isinstance(entry.get("name"), str):
        return "has no string 'name'"
    if not _int(entry.get("numel")):
        return "has no integer 'numel'"
    if not isinstance(entry.get("type", ""), str):
        return "has a non-string 'type'"
    return None


def parse_events(lines: Iterable[str], source: str) -> tuple[list[dict[str, Any]], list[str]]:
    """events.jsonl lines -> (JSON objects, problems). Non-objects and bad lines are skipped."""
    events: list[dict[str, Any]] = []
    bad: list[int] = []
    extra = 0
    for number, line in enumerate(lines, 1):
        if number > MAX_EVENTS:
            extra += 1
            continue
        if not line.strip():
            continue
        try:
            event = json.loads(line) if len(line) <= MAX_EVENT_LINE else None
        except ValueError:
            event = None
        if isinstance(event, dict):
            events.append(event)
        else:
            bad.append(number)
    problems = []
    if bad:
        shown = ", ".join(map(str, bad[:5])) + (" ..." if len(bad) > 5 else "")
        problems.append(f"{source}: {len(bad)} line(s) not a JSON object (line {shown}); skipped")
    if extra:
        problems.append(f"{source}: {extra} line(s) beyond the first {MAX_EVENTS} not read")
    return events, problems


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."
