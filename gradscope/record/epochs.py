"""Epoch boundaries without a code change: each fresh iteration of the training DataLoader.

The training loader is the one most optimizer steps ran under (a validation loader
iterates once per epoch too, but no step happens during its iteration). Loaders are held
weakly; the boundaries found so far are kept, since loaders may be gone at exit.
"""

from __future__ import annotations

import weakref
from typing import Any


class EpochTracker:
    def __init__(self) -> None:
        self._starts: weakref.WeakKeyDictionary[Any, list[int]] = weakref.WeakKeyDictionary()
        self._steps: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._current: weakref.ref[Any] | None = None
        self._new_iteration = False
        self.starts: list[int] = []  # steps at which the training loader began an epoch

    def loader_started(self, loader: Any, step: int) -> None:
        """A DataLoader began an iteration; ``step`` is the next step to be taken."""
        self._starts.setdefault(loader, []).append(step)
        self._current = weakref.ref(loader)
        self._new_iteration = True

    def step_taken(self) -> None:
        """Count the step for the loader iterating now; refresh the boundaries if it is new."""
        loader = self._current() if self._current is not None else None
        if loader is None:
            return
        self._steps[loader] = self._steps.get(loader, 0) + 1
        if self._new_iteration:
            self._new_iteration = False
            training = max(self._steps.items(), key=lambda item: item[1])[0]
            self.starts = sorted(set(self._starts.get(training, [])))
