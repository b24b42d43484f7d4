"""meta.json while a run goes on: the layer table with its coverage evidence, the output
head and the step count, written from the first step and kept current (docs/reliability.md).

The card is rewritten when the layer table or its evidence changes, when the head changes,
and at least every ``META_REFRESH_SECONDS``, so a killed run keeps all three at most that
stale. A failed write is reported once and never raises into training.
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gradscope.record import persample
from gradscope.record.names import ModuleNames
from gradscope.store import meta as run_meta

META_REFRESH_SECONDS = 10.0  # meta.json's step count and layer table, at most this old after a kill


class RunCard:
    """What the recorder keeps in meta.json besides the launcher's fields."""

    def __init__(self, run_dir: Path, names: ModuleNames, engine: Any, dirty: bool) -> None:
        self.run_dir = run_dir
        self.head: str | None = None
        self.layers_dirty = dirty  # a new root module or compiled module was seen
        self._names = names
        self._engine = engine
        self._last_module: weakref.ref[torch.nn.Module] | None = None
        self._layer_table: list[dict[str, Any]] = []
        self._written = time.monotonic()
        self._failed = False

    def module_ran(self, module: torch.nn.Module) -> None:
        """A module with parameters ran: the last one of a forward is the output head."""
        self._last_module = weakref.ref(module)

    def due(self) -> bool:
        """Whether a step just taken should rewrite meta.json (and take the new head)."""
        head = self._head_layer()
        evidence_changed = self._engine is not None and self._engine.ledger.take_dirty()
        stale = time.monotonic() - self._written > META_REFRESH_SECONDS
        due = self.layers_dirty or head != self.head or evidence_changed or stale
        self.layers_dirty, self.head = False, head
        return due

    def write(self, fields: dict[str, Any], report_failure: Callable[[str, BaseException], None]) -> None:
        """meta.json updated with ``fields``, the head and the layer table."""
        if self._names.roots():  # the model may be gone by the time the process exits
            self._layer_table = self._names.layer_table(functools.partial(persample.coverage, self._engine))
        if self._engine is not None:  # covered = rows recorded (coverage from evidence)
            self._layer_table = self._engine.ledger.layer_table(self._layer_table)
        self._written = time.monotonic()
        try:
            run_meta.update_meta(self.run_dir, head=self.head, layers=self._layer_table, **fields)
        except (OSError, ValueError) as err:
            if not self._failed:  # once: it never raises into training
                self._failed = True
                report_failure("meta.json", err)

    def _head_layer(self) -> str | None:
        """The layer of the last module with parameters that ran in the forward pass: the
        output head (a tied head's weight is reported under the layer that owns it)."""
        module = self._last_module() if self._last_module is not None else None
        param = next(module.parameters(recurse=False), None) if module is not None else None
        return self.head if param is None else self._names.param(param)[0]
