"""Starts a Recorder inside a process launched by ``gradscope record``.

``arm`` adds an import hook that waits for ``import torch`` to finish, so processes that
never use torch (pip, shells, torchrun's helpers) pay nothing. Once torch is imported the
recorder installs its global hooks; it writes nothing until a step happens, so DataLoader
workers and the torchrun launcher stay silent. Each torchrun worker records its own rank.
"""

from __future__ import annotations

import atexit
import importlib.abc
import importlib.machinery
import os
import sys
from typing import Any

_recorder: Any = None


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
    global _recorder
    if _recorder is not None:
        return
    try:
        from pathlib import Path

        from gradscope.record.config import RecordConfig
        from gradscope.record.launch import ENV_CONFIG, ENV_RUN_DIR
        from gradscope.record.recorder import Recorder

        config = RecordConfig.from_json(os.environ.get(ENV_CONFIG, "{}"))
        _recorder = Recorder(run_dir=Path(os.environ[ENV_RUN_DIR]), config=config, owns_meta=False)
        _recorder.start()
        atexit.register(_recorder.close)
    except Exception as err:  # noqa: BLE001 - never stop the user's program
        print(f"gradscope: warning: recorder did not start ({err}); training continues",
              file=sys.stderr)
