"""The one line ``gradscope record`` ends with: where the run went and what it holds.

Read back from what the run directory says (meta.json, events.jsonl), not from what the
launcher hoped: steps the recorder saved, the share of parameters with per-sample rows
(gradscope/report/coverage.py), and how many warnings the recorder logged.
"""

from __future__ import annotations

import json
from pathlib import Path

from gradscope.report.coverage import layer_coverage
from gradscope.store import meta as run_meta

MAX_EVENT_BYTES = 4 * 1024 * 1024


def summary_line(run_dir: Path, launcher_warnings: int = 0, exit_code: int = 0) -> str:
    """'run runs/x: 240 steps, per-sample coverage 100% of parameters, 0 warnings (...)';
    ``launcher_warnings``: those gradscope record printed itself (not in events.jsonl);
    a non-zero ``exit_code`` of the script is named."""
    try:
        meta = run_meta.read_meta(run_dir)
    except (OSError, ValueError) as err:
        ended = f"; the script exited with code {exit_code}" if exit_code else ""
        return f"run {run_dir}: meta.json unreadable ({err}); nothing to summarise{ended}"
    steps = meta.get("steps")
    recording = meta.get("recording") or {}
    parts = [f"{steps if isinstance(steps, int) else 0} steps"]
    if recording.get("state") not in (None, "ok"):
        parts[0] += f" ({recording.get('state')})"
    layers = layer_coverage(meta)
    total = sum(layer.numel for layer in layers)
    if total and meta.get("config", {}).get("profile") != "minimal":
        covered = sum(layer.numel for layer in layers if layer.covered) / total
        parts.append(f"per-sample coverage {covered:.0%} of parameters")
    else:
        parts.append("no per-sample statistics")
    warnings = _warning_count(run_dir) + launcher_warnings
    parts.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
    if exit_code:
        parts.append(f"the script exited with code {exit_code}")
    return f"run {run_dir}: {', '.join(parts)} (gradscope report {run_dir})"


def _warning_count(run_dir: Path) -> int:
    try:
        with open(run_dir / run_meta.EVENTS_FILE, encoding="utf-8", errors="replace") as handle:
            lines = handle.read(MAX_EVENT_BYTES).splitlines()
    except OSError:
        return 0
    count = 0
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        count += isinstance(event, dict) and event.get("level") == "warning"
    return count
