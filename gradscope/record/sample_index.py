"""SAMPLES.index and SAMPLES.loss: which dataset item each sample is, and its loss.

Indices come from the DataLoader's sampler with no code change, for map-style datasets;
for a ``Subset`` (``random_split``), nested or not, they are mapped through
``Subset.indices`` to the index in the original dataset.
Three methods of torch's private ``_BaseDataLoaderIter`` are wrapped while recording
(nothing is stored on the user's loader or iterator): ``_next_index`` (the sampler's
index list of the next batch to load, asked ahead of time by worker processes) appends
to a per-iterator queue, ``__next__`` (a batch handed to the script) takes the queue's
front, and ``_reset`` (a new epoch of a persistent iterator) empties it. Batches leave a
loader in the order their indices were drawn (``in_order=True``, the default, with any
number of workers), so the batch handed over is the front's.

A backward is matched to a batch only when that is unambiguous: exactly one batch was
handed over, with gradients enabled, since the previous backward, and its index list is as
long as the backward's per-sample batch. Otherwise its samples get -1, and why is counted
in meta.json (``sample_index``). Two or more batches before one backward (a prefetching
wrapper such as a look-ahead loader, two training loaders zipped, a skipped batch) turn
loader indices off for the rest of the run: a batch could be matched to the wrong backward.
A script can always declare them: ``gradscope.indices(idx)`` before the backward.

Losses: ``gradscope.losses(per_sample)`` declares them; without it they are read from the
loss's graph where exact (``sample_loss.graph_losses``); else NaN.
"""

from __future__ import annotations

import functools
import weakref
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import torch
import torch.utils.data as torch_data
from torch.utils.data import dataloader as torch_dataloader

from gradscope.record.rows import MicroStats

AMBIGUOUS = "several batches fetched before one backward: loader indices turned off"
NO_BATCH = "no DataLoader batch fetched since the previous backward"


class LoaderIndices:
    """The index lists of batches handed to the script since the last ``take``."""

    def __init__(self, guard: Callable[[str, Callable[..., Any]], Callable[..., Any]]) -> None:
        self._guard = guard
        self._queues: weakref.WeakKeyDictionary[Any, deque] = weakref.WeakKeyDictionary()
        self._restore: list[tuple[str, Any]] = []
        self.fetched: list[list[int] | str] = []  # an index list, or why the batch has none

    def install(self) -> None:
        owner = getattr(torch_dataloader, "_BaseDataLoaderIter", None)
        names = ("_reset", "_next_index", "__next__")
        if owner is None or not all(callable(getattr(owner, n, None)) for n in names):
            return  # another torch: no loader indices (gradscope.indices still works)
        for name, make in zip(names, (self._reset_wrapper, self._index_wrapper, self._next_wrapper)):
            original = owner.__dict__[name]
            self._restore.append((name, original))
            setattr(owner, name, functools.wraps(original)(make(original)))

    def remove(self) -> None:
        owner = torch_dataloader._BaseDataLoaderIter
        for name, original in reversed(self._restore):
            setattr(owner, name, original)
        self._restore = []

    def take(self) -> list[list[int] | str]:
        fetched, self.fetched = self.fetched, []
        return fetched

    def _reset_wrapper(self, original: Callable[..., Any]) -> Callable[..., Any]:
        clear = self._guard("loader indices", lambda it: self._queues.pop(it, None))

        def _reset(it: Any, *args: Any, **kwargs: Any) -> Any:
            clear(it)
            return original(it, *args, **kwargs)

        return _reset

    def _index_wrapper(self, original: Callable[..., Any]) -> Callable[..., Any]:
        drawn = self._guard("loader indices", self._drawn)

        def _next_index(it: Any) -> Any:
            index = original(it)  # StopIteration goes on to the loader
            drawn(it, index)
            return index

        return _next_index

    def _next_wrapper(self, original: Callable[..., Any]) -> Callable[..., Any]:
        handed = self._guard("loader indices", self._handed)

        def __next__(it: Any) -> Any:
            batch = original(it)
            handed(it)
            return batch

        return __next__

    def _drawn(self, it: Any, index: Any) -> None:
        if isinstance(index, int):
            index = [index]  # batch_size=None: the sampler yields one index per batch
        ok = isinstance(index, (list, tuple)) and all(isinstance(i, int) for i in index)
        self._queues.setdefault(it, deque()).append(list(index) if ok else None)

    def _handed(self, it: Any) -> None:
        queue = self._queues.get(it)
        index = queue.popleft() if queue else None
        if not torch.is_grad_enabled():
            return  # a validation loop under no_grad: not a training batch
        if getattr(it, "_dataset_kind", None) == torch_dataloader._DatasetKind.Iterable:
            self.fetched.append("iterable-style dataset (no sampler indices)")
        elif getattr(it, "_in_order", True) is False:
            self.fetched.append("DataLoader(in_order=False): batches may leave out of order")
        else:
            index = base_indices(getattr(it, "_dataset", None), index) if index is not None else None
            self.fetched.append(index if index is not None else "the sampler's batch is not a list of ints")
        del self.fetched[2:]  # one or several is all a backward needs to know (bounded memory)


def base_indices(dataset: Any, index: list[int]) -> list[int]:
    """Positions in a ``torch.utils.data.Subset`` (``random_split``), nested or not, mapped
    through ``Subset.indices`` to the index in the underlying dataset."""
    while isinstance(dataset, torch_data.Subset):
        index = [int(dataset.indices[i]) for i in index]
        dataset = dataset.dataset
    return index


class SampleLabels:
    """Declared or observed per-sample losses and dataset indices, per backward."""

    def __init__(self, loader: LoaderIndices) -> None:
        self.loader = loader
        self._declared: dict[str, torch.Tensor] = {}  # "loss" / "index" for the next backward
        self._current: dict[str, torch.Tensor] = {}
        self._fetched: list[list[int] | str] = []
        self._loader_off = False
        self.counts: dict[str, Counter] = {"index": Counter(), "loss": Counter()}

    def declare(self, kind: str, values: Any) -> None:
        """``kind`` "loss" or "index": one value per sample of the next backward."""
        dtype = torch.float64 if kind == "loss" else torch.int64
        tensor = values if isinstance(values, torch.Tensor) else torch.as_tensor(values)
        self._declared[kind] = tensor.detach().reshape(-1).to(dtype, copy=True)

    def backward_began(self) -> None:
        """Every backward: the declared values and the batches fetched since the last one."""
        self._current, self._declared = self._declared, {}
        self._fetched = self.loader.take()
        if len(self._fetched) > 1:
            self._loader_off = True

    def attach(self, stats: MicroStats, batch: int, graph_losses: torch.Tensor | None) -> None:
        """Fill ``stats.loss`` and ``stats.index`` for a backward of ``batch`` samples."""
        loss, source = self._current.get("loss"), "declared"
        if loss is None:
            loss, source = graph_losses, "graph"
        stats.loss = self._fits(loss, batch, "loss", source, "not declared and not exact in the loss graph")
        index, source = self._current.get("index"), "declared"
        why = "not declared"
        if index is None:
            index, source, why = self._loader_index(stats)
        stats.index = self._fits(index, batch, "index", source, why)

    def _loader_index(self, stats: MicroStats) -> tuple[torch.Tensor | None, str, str]:
        if self._loader_off:
            return None, "", AMBIGUOUS
        if not self._fetched:
            return None, "", NO_BATCH
        found = self._fetched[0]
        if isinstance(found, str):
            return None, "", found
        device = stats.norm2[0].device if stats.norm2 else "cpu"
        return torch.tensor(found, dtype=torch.int64).to(device, non_blocking=True), "sampler", ""

    def _fits(self, values: torch.Tensor | None, batch: int, kind: str, source: str, why: str) -> Any:
        if values is not None and values.numel() != batch:
            why, values = "not one value per sample of the backward (e.g. one per token)", None
        self.counts[kind][source if values is not None else f"unknown: {why}"] += 1
        return values

    def summary(self) -> dict[str, dict[str, int]]:
        """meta.json ``sample_index`` / ``sample_loss``: backward calls per source or reason."""
        return {f"sample_{kind}": dict(counts) for kind, counts in self.counts.items()}
