"""The recorder's warnings: all go to events.jsonl and meta.json, one reaches stderr.

A user's terminal gets a single line however many parts of the recorder fail; the run
directory keeps every one, with the step it happened at.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gradscope.store import meta as run_meta


class FailureLog:
    def __init__(self, run_dir: Path, rank: int) -> None:
        self.run_dir = run_dir
        self.rank = rank
        self.entries: list[dict[str, object]] = []

    def warn(self, component: str, message: str, step: int) -> None:
        """Log one warning; the message is cut to its first line (an error from a torch
        dispatcher can run to a hundred lines)."""
        lines = message.strip().splitlines()
        message = lines[0] if lines else ""
        entry = {"component": component, "message": message, "step": step}
        if not self.entries:
            print(f"gradscope: warning: {message} (all recorder warnings: {self.run_dir}/"
                  f"{run_meta.EVENTS_FILE})", file=sys.stderr, flush=True)
        self.entries.append(entry)
        try:
            run_meta.append_event(self.run_dir, {"level": "warning", "rank": self.rank, **entry})
        except OSError:
            pass  # an unwritable run directory: the stderr line and meta.json still say it

    def failed(self, component: str, err: BaseException | str, step: int) -> None:
        """A part of the recorder raised and switched itself off."""
        text = (err if isinstance(err, str) else str(err)).strip().splitlines()
        first = text[0] if text else ""
        message = first if isinstance(err, str) else f"{type(err).__name__}: {first}"
        self.warn(component, f"{component} failed and was disabled ({message}); training continues", step)
