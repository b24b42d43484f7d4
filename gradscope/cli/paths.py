"""Checks of the paths a command is given, before any work: one line each (GradscopeError)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from gradscope.errors import GradscopeError, os_error_line
from gradscope.errors import short_path as shown
from gradscope.store.schema import TABLES

MAX_CONFIG_BYTES = 1024 * 1024


def _stat(path: Path | str, what: str) -> os.stat_result | None:
    """os.stat, None when missing; a GradscopeError for any other failure."""
    text = str(path)
    if not text or "\0" in text:
        raise GradscopeError(f"{what} path is empty or holds a NUL byte")
    try:
        return os.stat(text)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise GradscopeError(f"{what} {shown(path)}: {os_error_line(err)}") from None


PACKAGED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CONFIG_NAMES = ("default", "strict")


def config_file(path: Path) -> Path:
    """A config file to read: a regular file of at most 1 MiB, or the name of a config
    shipped with gradscope (``default``, ``strict``: gradscope/configs/NAME.toml)."""
    if str(path) in CONFIG_NAMES:
        return PACKAGED_CONFIGS / f"{path}.toml"
    info = _stat(path, "config file")
    if info is None:
        hint = f" (shipped configs: {', '.join(CONFIG_NAMES)})" if "/" not in str(path) else ""
        raise GradscopeError(f"no such config file: {shown(path)}{hint}")
    if not stat.S_ISREG(info.st_mode):
        raise GradscopeError(f"config file {shown(path)} is not a regular file")
    if info.st_size > MAX_CONFIG_BYTES:
        raise GradscopeError(f"config file {shown(path)} is larger than 1 MiB")
    return path


RUN_FILES = ("meta.json", "events.jsonl")


def output_file(path: Path, option: str, runs: tuple[Path, ...] = ()) -> Path:
    """A file to write: not a directory, in a folder that exists, and none of the files of
    the runs being read (``--html RUN/meta.json`` used to overwrite the run's card)."""
    try:
        target = path.resolve()
        for run in runs:
            root = run.resolve()
            if target in [root / name for name in RUN_FILES] or any(
                    target.is_relative_to(root / table) for table in TABLES):
                raise GradscopeError(f"{option} {shown(path)} would overwrite the run's own data; "
                                     "give another file name")
    except (OSError, RuntimeError):
        pass  # unresolvable (a loop, too long): the checks below say why
    info = _stat(path, option)
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise GradscopeError(f"{option} {shown(path)} is a directory; give a file name")
    parent = _stat(path.parent if str(path.parent) else Path("."), f"{option} folder")
    if parent is None or not stat.S_ISDIR(parent.st_mode):
        raise GradscopeError(f"{option} {shown(path)}: its folder does not exist")
    return path


def is_terminal(path: Path) -> bool:
    """Whether writing to ``path`` would write to a terminal (``/dev/stdout``, ``/dev/tty``
    on a console): a character device that is a tty once opened."""
    info = _stat(path, "--out")
    if info is None or not stat.S_ISCHR(info.st_mode):
        return False
    try:
        fd = os.open(str(path), os.O_WRONLY | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return os.isatty(fd)
    finally:
        os.close(fd)
