"""Running the training command as a supervised child (Linux and macOS; PDEATHSIG Linux only).

Signals. SIGINT, SIGTERM and SIGHUP sent to the ``gradscope record`` process are
passed on to the child once, and remembered: the run is then "interrupted", whatever
exit code the script chooses. A signal the terminal sent to the whole foreground group
(Ctrl-C) already reached the child, so it is noted but not sent twice. When stdin is not
a terminal (schedulers, CI, nohup) the child gets its own process group, so a signal sent
to gradscope's group also reaches the child exactly once (through gradscope).

Orphans. The child asks the kernel for SIGTERM when gradscope dies (prctl
PR_SET_PDEATHSIG), so a SIGKILLed gradscope never leaves training running unsupervised;
the child's recorder then flushes and finalises meta.json itself (inject/activate.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
SI_KERNEL = 0x80  # si_code of signals the kernel sends, e.g. the terminal's Ctrl-C
PR_SET_PDEATHSIG = 1


@dataclass
class Outcome:
    returncode: int  # Popen's: negative -N when killed by signal N
    signal: int | None  # the first signal gradscope received (and passed on) while waiting


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _child_setup(parent: int, new_group: bool) -> Callable[[], None]:
    prctl = _prctl()  # loaded before fork: nothing but system calls run in the child

    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, (*FORWARDED, signal.SIGCHLD))
        if new_group:
            os.setpgid(0, 0)
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # gradscope died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return setup


def run_supervised(
    command: list[str], env: dict[str, str], finish: Callable[[Outcome], None]
) -> Outcome:
    """Start ``command``; wait for it, passing on the signals gradscope receives; call
    ``finish`` (which writes meta.json) while signals are still held, so a late SIGTERM
    cannot cut it short. Raises OSError when the command cannot start.
    """
    new_group = not _stdin_is_terminal()
    waited = (*FORWARDED, signal.SIGCHLD)
    signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    try:
        child = subprocess.Popen(command, env=env, preexec_fn=_child_setup(os.getpid(), new_group))
        outcome = Outcome(child.returncode, None)
        outcome.signal = _wait(child, waited, same_group=not new_group)
        outcome.returncode = child.returncode
        finish(outcome)
    finally:
        while signal.sigtimedwait(waited, 0) is not None:  # held while we finished: drop
            pass
        signal.pthread_sigmask(signal.SIG_UNBLOCK, waited)
    return outcome


def _wait(child: subprocess.Popen, waited: tuple[int, ...], same_group: bool) -> int | None:
    seen: int | None = None
    while child.poll() is None:
        info = signal.sigtimedwait(waited, 0.5)
        if info is None or info.si_signo == signal.SIGCHLD:
            continue
        seen = seen or info.si_signo
        if not (same_group and info.si_code == SI_KERNEL):
            try:
                child.send_signal(info.si_signo)
            except ProcessLookupError:
                pass
    return seen


def _stdin_is_terminal() -> bool:
    try:
        return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False
