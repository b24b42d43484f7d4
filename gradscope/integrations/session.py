"""One recording driven by a trainer's callback: the Recorder that ``gradscope record``
injects, started and stopped by the trainer's hooks.

The callbacks add what the trainer knows to meta.json under ``trainer`` (its name, its
optimizer-step counter at the start and end, gradient accumulation, precision) and warn
once when the steps recorded differ from the optimizer steps the trainer counted.
"""

from __future__ import annotations

import atexit
import importlib
import os
import sys
import weakref
from pathlib import Path
from typing import Any

from gradscope.errors import GradscopeError
from gradscope.store.meta import update_meta


class MissingExtra(GradscopeError, ImportError):
    """A trainer integration whose package is not installed (one line: what to install)."""


def require(modules: tuple[str, ...], extra: str, what: str) -> Any:
    """The first of ``modules`` that imports; MissingExtra naming the extra when none does."""
    for name in modules:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise MissingExtra(f"{what} needs the {extra} package: pip install 'gradscope[{extra}]'")


class Session:
    """A Recorder started at the trainer's first hook and closed at its last one.

    ``options`` are the Recorder's keyword arguments (every, profile, sketch, reduction,
    batch_dim, force). Nothing here raises into training once the Recorder has started.
    """

    def __init__(self, run_dir: str | os.PathLike[str] | None, options: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self.options = options
        self.recorder: Any = None
        self.path: Path | None = None  # the run directory, once started
        self._trainer: dict[str, Any] = {}

    @property
    def active(self) -> bool:
        return self.recorder is not None

    def start(self, run_dir: str | os.PathLike[str], model: Any, optimizers: list[Any],
              trainer: dict[str, Any]) -> None:
        """Start recording ``model`` (the trainer's module) and its ``optimizers`` (the torch
        optimizers, unwrapped). A bad run directory raises GradscopeError, before training."""
        from gradscope.record.recorder import Recorder

        _clear_if_forced(Path(run_dir), bool(self.options.get("force")))
        recorder = Recorder(model, list(optimizers) or None, run_dir=run_dir, **self.options)
        recorder.start()
        for optimizer in optimizers:  # created before the recorder: say so, as record's hook would
            recorder.optimizer_created(optimizer)
        self.recorder, self._trainer, self.path = recorder, dict(trainer), Path(run_dir)
        atexit.register(_close_at_exit, weakref.ref(self))

    def finish(self, status: str, global_step: int | None) -> None:
        """Close the Recorder, then add the trainer's facts to meta.json."""
        recorder, self.recorder = self.recorder, None
        if recorder is None:
            return
        recorder.close(status=status)
        start = self._trainer.get("global_step_start")
        trainer = dict(self._trainer, global_step_end=global_step, steps_recorded=recorder.steps_emitted)
        if recorder.rank != 0:
            return
        try:
            update_meta(recorder.run_dir, trainer=trainer)
        except (OSError, ValueError) as err:
            print(f"gradscope: warning: meta.json lacks the trainer's facts ({err})", file=sys.stderr)
        counted = global_step - start if isinstance(start, int) and isinstance(global_step, int) else None
        if counted is not None and counted != recorder.steps_emitted:
            print(f"gradscope: warning: recorded {recorder.steps_emitted} steps, the trainer counted "
                  f"{counted} optimizer steps", file=sys.stderr)


def _clear_if_forced(run_dir: Path, force: bool) -> None:
    """``force``: remove an earlier run's files as ``gradscope record --force`` does (left in
    place, its steps were read as this run's). Rank 0 only: the other ranks' processes start
    with it and must not delete what it writes."""
    from gradscope.record.launch import clear_earlier_run
    from gradscope.record.rank_claim import process_rank

    rank, _ = process_rank(int(os.environ.get("RANK", "0")), 1)
    if force and rank == 0 and run_dir.is_dir():
        clear_earlier_run(run_dir)


def _close_at_exit(session: weakref.ref[Session]) -> None:
    """A run whose trainer never reached its last hook (an exception the trainer has no hook
    for): close at exit, marked crashed."""
    live = session()
    if live is not None and live.active:
        live.finish("crashed", None)
