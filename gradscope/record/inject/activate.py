"""Starts a Recorder inside a process launched by ``gradscope record``.

``arm`` adds an import hook that waits for ``import torch`` to finish, so processes that
never use torch (pip, shells, torchrun's helpers) pay nothing. Once torch is imported the
recorder installs its global hooks and appends a ``recorder-started`` event (so the
parent can tell "never started" from "saw no backward"); it writes no shard until a step
happens, so DataLoader workers and the torchrun launcher stay silent.

Ending. The recorder is flushed at exit (atexit: normal exit, sys.exit, an unhandled
KeyboardInterrupt) and on SIGTERM: when the script has no SIGTERM handler of its own, a
handler is installed that flushes (bounded by the writer's close timeout), restores the
default action and re-sends SIGTERM, so the process still dies "killed by SIGTERM". A
handler the script installs later replaces it, and the script's own semantics hold.
When the ``gradscope record`` process is gone (its SIGTERM via PR_SET_PDEATHSIG, or any
exit after it died), the recording process finalises meta.json itself.
"""

from __future__ import annotations

import atexit
import importlib.abc
import importlib.machinery
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

_recorder: Any = None
_owner_pid = 0
_parent_pid = 0  # our parent when the recorder started: the launcher itself for its direct child
_terminating = False
_exiting = False  # the atexit flush has begun


class _AfterTorchImport(importlib.abc.MetaPathFinder):
    """Wraps torch's loader so that ``start`` runs right after torch has executed."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "torch":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module: Any) -> None:
            original_exec(module)
            start()

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def arm() -> None:
    if "torch" in sys.modules:
        start()
    elif not any(isinstance(f, _AfterTorchImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterTorchImport())


def start() -> None:
    """Create and start the process's Recorder; errors become one warning line."""
    global _recorder, _owner_pid, _parent_pid
    if _recorder is not None:
        return
    try:
        from gradscope.record.config import RecordConfig
        from gradscope.record.launch import ENV_CONFIG, ENV_RUN_DIR, STARTED_EVENT
        from gradscope.record.recorder import Recorder
        from gradscope.store.meta import append_event

        run_dir = Path(os.environ[ENV_RUN_DIR])
        config = RecordConfig.from_json(os.environ.get(ENV_CONFIG, "{}"))
        _recorder = Recorder(run_dir=run_dir, config=config, owns_meta=False)
        _recorder.start()
        _owner_pid, _parent_pid = os.getpid(), os.getppid()
        atexit.register(_at_exit)
        _install_sigterm()
        append_event(run_dir, {"level": "info", "event": STARTED_EVENT, "pid": os.getpid(),
                               "rank": getattr(_recorder, "rank", 0)})
    except Exception as err:  # noqa: BLE001 - never stop the user's program
        print(f"gradscope: warning: recorder did not start ({err}); training continues",
              file=sys.stderr)


def _install_sigterm() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: Any) -> None:
    """Flush, then die by SIGTERM as the default action would have."""
    global _terminating
    if os.getpid() == _owner_pid and _exiting:
        # The atexit flush is already running (bounded by the writer's close timeout) and
        # this handler interrupted it: finishing again here would find the recorder closed
        # and die at once, losing the queued rows and their count in meta.json (issue 12).
        return
    if os.getpid() == _owner_pid and not _terminating:
        _terminating = True
        # A dying launcher may send PDEATHSIG more than once (once per exiting thread it
        # re-parented us to): later SIGTERMs must not cut the flush short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _finish(reason="SIGTERM")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _at_exit() -> None:
    global _exiting
    if os.getpid() == _owner_pid and not _terminating:
        _exiting = True
        if threading.current_thread() is threading.main_thread():
            # A Ctrl-C while the flush waits on a slow disk raised KeyboardInterrupt inside
            # it: a traceback, the flush cut short, no `unwritten` in meta.json. The flush is
            # bounded (the writer's close timeout), so SIGINT waits for it (issue 12).
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        _finish(reason=None)


def _finish(reason: str | None) -> None:
    for step in (_recorder.close, _say_finished, lambda: _finalise_if_orphaned(reason)):
        try:
            step()
        except Exception as err:  # noqa: BLE001 - exiting anyway: one line, then go on
            print(f"gradscope: warning: finishing the recording failed ({type(err).__name__}: {err})",
                  file=sys.stderr, flush=True)


def _say_finished() -> None:
    """A small append that often gets through where meta.json cannot (full or failing disk)."""
    from gradscope.record.launch import FINISHED_EVENT
    from gradscope.store.meta import append_event

    if getattr(_recorder, "steps_emitted", 0) or getattr(_recorder, "rank", 0) == 0:
        append_event(_recorder.run_dir, {"level": "info", "event": FINISHED_EVENT, "pid": os.getpid(),
                                         "rank": _recorder.rank, "steps": _recorder.steps_emitted})


def _finalise_if_orphaned(reason: str | None) -> None:
    """The parent normally writes the final status; without it, write what we know."""
    from gradscope.record.launch import ENV_LAUNCHER
    from gradscope.store.meta import drop_all_reserves, now_iso, update_meta

    launcher = os.environ.get(ENV_LAUNCHER, "")
    if not launcher.isdigit() or getattr(_recorder, "rank", 0) != 0:
        return
    # The kernel re-parents the launcher's direct child before it sends PDEATHSIG.
    if (int(launcher) != _parent_pid or os.getppid() == _parent_pid) and _alive(int(launcher)):
        return
    how = f"was stopped by {reason}" if reason else "exited (its exit code is not known)"
    update_meta(_recorder.run_dir, status="interrupted", ended=now_iso(), signal=reason,
                end_reason=f"gradscope record (pid {launcher}) died; the training process {how}")
    drop_all_reserves(_recorder.run_dir)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
