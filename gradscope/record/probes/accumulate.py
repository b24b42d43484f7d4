"""One step's probe values, kept on the device and turned into PROBES rows in the writer thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gradscope.record.rows import HostCopy

HEAD = ".h"  # a key ending so holds one value per head: key.h0, key.h1, ...
Combine = Callable[[Tensor, Tensor], Tensor]
COMBINE: dict[str, Combine] = {"sum": torch.add, "max": torch.maximum, "min": torch.minimum,
                               "any": torch.logical_or, "last": lambda old, new: new}


class StepValues:
    """(layer, probe, key) -> a device tensor combined over the step's calls."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, str, str], Tensor] = {}

    def __bool__(self) -> bool:
        return bool(self._values)

    def add(self, layer: str, probe: str, values: dict[str, Tensor], how: dict[str, str]) -> None:
        for key, value in values.items():
            slot = (layer, probe, key)
            old = self._values.get(slot)
            value = value.detach()
            if old is not None and old.shape == value.shape and old.device == value.device:
                value = COMBINE[how.get(key, "sum")](old, value)
            self._values[slot] = value

    def get(self, layer: str, probe: str, key: str) -> Tensor | None:
        return self._values.get((layer, probe, key))

    def take(self) -> dict[tuple[str, str, str], Tensor]:
        values, self._values = self._values, {}
        return values


def rows_later(step: int, rank: int, rows: list[tuple[str, str, str, Tensor | float]]) -> Callable[[], dict]:
    """Start the host copies now; the returned callable (writer thread) builds the rows.
    A tensor value [H] becomes H rows with the key suffixed ``.h<i>``."""
    tensors = [v if isinstance(v, Tensor) else None for *_, v in rows]
    copy = HostCopy([t.float() if t is not None else None for t in tensors])

    def build() -> dict[str, dict[str, list[Any]]]:
        out: dict[str, list[Any]] = {"step": [], "rank": [], "layer": [], "probe": [], "key": [], "value": []}
        for (layer, probe, key, value), host in zip(rows, copy.get()):
            flat = np.atleast_1d(np.asarray(value if host is None else host, dtype=np.float64))
            per_head = key.endswith(HEAD)
            keys = [f"{key}{i}" for i in range(len(flat))] if per_head else [key]
            for name, number in zip(keys, flat.tolist()):
                for column, item in zip(out, (step, rank, layer, probe, name, number)):
                    out[column].append(item)
        return {"probes": out}

    return build
