"""A finished step, as tensors on the device, turned into table rows in the writer thread.

The training thread only launches asynchronous copies to the host (``HostCopy``); the
writer thread waits for them and builds the rows, so no value is read back in training.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from gradscope.record.tasks import TaskStats
from gradscope.record.writer import Rows, list_column


class HostCopy:
    """Device tensors copied to the host without blocking; ``get`` waits in the caller."""

    def __init__(self, tensors: list[torch.Tensor | None]) -> None:
        self._event = None
        self._tensors: list[torch.Tensor | None] = []
        for tensor in tensors:
            if tensor is not None and tensor.device.type == "cuda":
                tensor = tensor.detach().to("cpu", non_blocking=True)
                if self._event is None:
                    self._event = torch.cuda.Event()
            self._tensors.append(None if tensor is None else tensor.detach())
        if self._event is not None:
            self._event.record()

    def get(self) -> list[np.ndarray | None]:
        if self._event is not None:
            self._event.synchronize()
        return [None if t is None else t.float().numpy() if t.dtype == torch.bfloat16
                else t.numpy() for t in self._tensors]


@dataclass
class MicroStats:
    """Per-sample statistics of one backward call: each sample's contribution c_i to the
    gradient the optimizer sees (tensors on the device, unscaled)."""

    micro: int
    layers: list[str]
    norm2: list[torch.Tensor]
    weight_dot: list[torch.Tensor]
    sketch: list[torch.Tensor | None]
    gram: list[torch.Tensor | None]
    groups: torch.Tensor | None = None
    # norm2 / weight_dot over each layer's "weight" parameter alone (None: the layer has none)
    norm2_w: list[torch.Tensor | None] = field(default_factory=list)
    weight_dot_w: list[torch.Tensor | None] = field(default_factory=list)
    loss: torch.Tensor | None = None  # [B] per-sample losses, when known
    index: torch.Tensor | None = None  # [B] dataset indices, when known


@dataclass
class StepRecord:
    """Everything known about one step; ``rows`` runs in the writer thread."""

    step: int
    rank: int
    optimizer: int
    wall_time: float
    step_time: float
    recorder_time: float
    backward_calls: int
    skipped: bool
    recorded: bool
    hparams: list[dict[str, Any]]
    losses: list[torch.Tensor] = field(default_factory=list)
    loss_scale: torch.Tensor | None = None
    per_sample_scale: float = math.nan  # f: g_i = f c_i (NaN unknown)
    # how f was known, per micro-batch: "declared" | "read" | "assumed", or a 0-dim bool
    # tensor (True: read) that only the device knows (nll_loss's ignore_index)
    per_sample_scale_source: list[Any] = field(default_factory=list)
    batch_size: int = -1
    # per-parameter values (same order as params); None when not recorded
    params: list[tuple[str, str]] = field(default_factory=list)
    per_param: dict[str, torch.Tensor] = field(default_factory=dict)
    micro_stats: list[MicroStats] = field(default_factory=list)
    task_stats: list[TaskStats] = field(default_factory=list)  # one per gradscope.tasks() call

    def start_copy(self) -> Callable[[], dict[str, Rows]]:
        """Launch the host copies now; the returned callable builds the rows later."""
        loss = torch.stack([x.detach().double().sum() for x in self.losses]).sum() if self.losses else None
        names = list(self.per_param)
        sources = [s for s in self.per_sample_scale_source if isinstance(s, torch.Tensor)]
        tensors = [loss, self.loss_scale] + sources + [self.per_param[n] for n in names]
        micro = [
            HostCopy([*m.norm2, *m.weight_dot, *m.sketch, *m.gram, m.groups, m.loss, m.index,
                      *_padded(m.norm2_w, m), *_padded(m.weight_dot_w, m)])
            for m in self.micro_stats
        ]
        copy = HostCopy(tensors)
        task_copies = [HostCopy([t.gram, t.sample_gram]) for t in self.task_stats]

        def build() -> dict[str, Rows]:
            values = copy.get()
            read = iter(values[2 : 2 + len(sources)])
            self.per_sample_scale_source = [
                s if isinstance(s, str) else "read" if bool(next(read)) else "assumed"
                for s in self.per_sample_scale_source
            ]
            per_param = dict(zip(names, values[2 + len(sources) :]))
            tables = {"steps": self._step_row(values[0], values[1], per_param)}
            if self.params and per_param:
                tables["layers"] = self._layer_rows(per_param)
            samples, grams = self._sample_rows([m.get() for m in micro])
            if samples:
                tables["samples"] = samples
            if grams:
                tables["gram"] = grams
            tasks, task_samples = self._task_rows([c.get() for c in task_copies])
            if tasks:
                tables["tasks"] = tasks
            if task_samples:
                tables["task_samples"] = task_samples
            return tables

        return build

    def _step_row(self, loss: Any, loss_scale: Any, per_param: dict[str, np.ndarray]) -> Rows:
        grads = per_param.get("grad_norm")
        return {
            "step": [self.step],
            "rank": [self.rank],
            "optimizer": [self.optimizer],
            "wall_time": [self.wall_time],
            "step_time": [self.step_time],
            "recorder_time": [self.recorder_time],
            "loss": [math.nan if loss is None else float(loss)],
            "backward_calls": [self.backward_calls],
            "batch_size": [self.batch_size],
            "skipped": [self.skipped],
            "recorded": [self.recorded],
            "grad_norm": [math.nan if grads is None else float(np.sqrt(np.sum(grads**2)))],
            "grad_norm_preclip": [_preclip(per_param.get("sum_norm2"))],
            "loss_scale": [math.nan if loss_scale is None else float(loss_scale)],
            "per_sample_scale": [self.per_sample_scale],
            "per_sample_scale_source": [_weakest(self.per_sample_scale_source)],
            "hparams": [json.dumps(self.hparams, default=str)],
        }

    def _layer_rows(self, per_param: dict[str, np.ndarray]) -> Rows:
        count = len(self.params)
        nan = np.full(count, np.nan)
        grad = per_param.get("grad_norm", nan)
        return {
            "step": [self.step] * count,
            "rank": [self.rank] * count,
            "layer": [layer for layer, _ in self.params],
            "param": [param for _, param in self.params],
            "grad_norm": grad,
            "weight_norm": per_param.get("weight_norm", nan),
            "update_norm": per_param.get("update_norm", nan),
            "init_distance": per_param.get("init_distance", nan),
            "nonfinite": ~np.isfinite(grad),
            "sum_norm2": per_param.get("sum_norm2", nan),
            "local_norm2": per_param.get("local_norm2", nan),
            "update_sketch": _sketch_column(per_param.get("update_sketch"), count),
        }

    def _sample_rows(self, micro_values: list[list[Any]]) -> tuple[Rows, Rows]:
        """SAMPLES and GRAM columns as numpy / Arrow arrays: no per-row Python work."""
        samples: list[Rows] = []
        grams: list[Rows] = []
        for stats, values in zip(self.micro_stats, micro_values):
            n = len(stats.layers)
            if n == 0:
                continue
            norm2 = np.stack(values[:n]).astype(np.float64)  # (L, B)
            sketches, gram_values, groups = values[2 * n : 3 * n], values[3 * n : 4 * n], values[4 * n]
            columns = self._sample_columns(stats, norm2, np.stack(values[n : 2 * n]), sketches, groups)
            extra = values[4 * n + 1 : 4 * n + 3], values[4 * n + 3 :]
            columns.update(_identity_columns(*extra, n, norm2.shape[1]))
            samples.append(columns)
            with_gram = [(layer, g) for layer, g in zip(stats.layers, gram_values) if g is not None]
            if with_gram:
                grams.append(self._gram_columns(stats.micro, with_gram))
        return _concatenate(samples), _concatenate(grams)

    def _sample_columns(
        self, stats: MicroStats, norm2: np.ndarray, dots: np.ndarray,
        sketches: list[np.ndarray | None], groups: np.ndarray | None,
    ) -> Rows:
        layers, batch = norm2.shape
        count = layers * batch
        width = max((s.shape[1] for s in sketches if s is not None), default=0)
        sketch = np.zeros((layers, batch, width), np.float32)
        for index, values in enumerate(sketches):
            if values is not None:
                sketch[index] = values
        group = np.full(batch, -1, np.int64) if groups is None or len(groups) != batch else groups
        return {
            "step": np.full(count, self.step, np.int64),
            "rank": np.full(count, self.rank, np.int32),
            "micro": np.full(count, stats.micro, np.int32),
            "sample": np.tile(np.arange(batch, dtype=np.int32), layers),
            "layer": np.repeat(np.asarray(stats.layers, dtype=object), batch),
            "norm2": norm2.reshape(-1),
            "weight_dot": dots.astype(np.float64).reshape(-1),
            "group": np.tile(group.astype(np.int64), layers),
            "sketch": list_column(sketch.reshape(count, width)),
        }

    def _gram_columns(self, micro: int, grams: list[tuple[str, np.ndarray]]) -> Rows:
        count = len(grams)
        return {
            "step": np.full(count, self.step, np.int64),
            "rank": np.full(count, self.rank, np.int32),
            "micro": np.full(count, micro, np.int32),
            "layer": [layer for layer, _ in grams],
            "size": np.asarray([g.shape[0] for _, g in grams], np.int32),
            "exact": np.ones(count, bool),
            "values": [g.astype(np.float64).reshape(-1) for _, g in grams],
        }

    def _task_rows(self, values: list[list[Any]]) -> tuple[Rows, Rows]:
        """TASKS: one row per (layer, task list), Grams of the step's tasks() calls summed
        (cross-call terms are not recorded). TASK_SAMPLES: one row per (sample, layer,
        pair a < b); samples of later calls are numbered after those of earlier ones."""
        summed: dict[tuple[str, ...], dict[str, np.ndarray]] = {}
        samples: dict[str, list[Any]] = {}
        offset = 0
        for stats, (gram, sample_gram) in zip(self.task_stats, values):
            layers = summed.setdefault(tuple(stats.names), {})
            for layer, matrix in zip(stats.layers, gram.astype(np.float64)):
                layers[layer] = layers[layer] + matrix if layer in layers else matrix
            if sample_gram is not None:
                _extend(samples, self._task_sample_columns(stats, sample_gram, offset))
                offset += sample_gram.shape[1]
        tasks: dict[str, list[Any]] = {}
        for names, layers in summed.items():
            _extend(tasks, {
                "step": [self.step] * len(layers),
                "rank": [self.rank] * len(layers),
                "layer": list(layers),
                "tasks": [list(names)] * len(layers),
                "values": [matrix.reshape(-1).tolist() for matrix in layers.values()],
            })
        return tasks, samples

    def _task_sample_columns(self, stats: TaskStats, gram: np.ndarray, offset: int) -> Rows:
        """Rows of one call's [L, B, K, K] per-sample cross-task Gram, pairs a < b."""
        count_layers, batch, size = gram.shape[:3]
        first, second = np.triu_indices(size, 1)
        pairs = len(first)
        total = count_layers * batch * pairs
        gram = gram.astype(np.float64)
        names = np.asarray(stats.sample_names, dtype=object)
        return {
            "step": [self.step] * total,
            "rank": [self.rank] * total,
            "sample": np.tile(np.repeat(np.arange(batch, dtype=np.int32) + offset, pairs), count_layers),
            "layer": np.repeat(np.asarray(stats.sample_layers, dtype=object), batch * pairs).tolist(),
            "task_a": np.tile(names[first], count_layers * batch).tolist(),
            "task_b": np.tile(names[second], count_layers * batch).tolist(),
            "dot": gram[:, :, first, second].reshape(-1),
            "norm2_a": gram[:, :, first, first].reshape(-1),
            "norm2_b": gram[:, :, second, second].reshape(-1),
        }


def _padded(values: list[torch.Tensor | None], micro: MicroStats) -> list[torch.Tensor | None]:
    """One entry per layer of ``micro`` (None where not measured)."""
    return values if len(values) == len(micro.layers) else [None] * len(micro.layers)


def _per_sample(values: np.ndarray | None, batch: int, fill: float, dtype: type) -> np.ndarray:
    return np.full(batch, fill, dtype) if values is None or len(values) != batch else values.astype(dtype)


def _identity_columns(loss_index: list[Any], weight_only: list[Any], layers: int, batch: int) -> Rows:
    """SAMPLES.loss, index (per sample, repeated for each layer row) and norm2_w, weight_dot_w."""
    loss = _per_sample(loss_index[0], batch, np.nan, np.float64)
    index = _per_sample(loss_index[1], batch, -1, np.int64)
    norm2_w = [_per_sample(v, batch, np.nan, np.float64) for v in weight_only[:layers]]
    dot_w = [_per_sample(v, batch, np.nan, np.float64) for v in weight_only[layers:]]
    return {
        "loss": np.tile(loss, layers),
        "index": np.tile(index, layers),
        "norm2_w": np.concatenate(norm2_w) if norm2_w else np.zeros(0),
        "weight_dot_w": np.concatenate(dot_w) if dot_w else np.zeros(0),
    }


def _sketch_column(sketch: np.ndarray | None, count: int) -> pa.Array:
    """LAYERS.update_sketch: one k-list per parameter row, nulls when not recorded."""
    if sketch is None or sketch.shape[0] != count:
        return pa.nulls(count, pa.list_(pa.float32()))
    return list_column(sketch.astype(np.float32))


def _preclip(sum_norm2: np.ndarray | None) -> float:
    """Global L2 norm of the gradient at the end of the step's last backward (before any
    clip_grad_norm_): sqrt of the sum of LAYERS.sum_norm2; NaN when any is unknown."""
    if sum_norm2 is None or not len(sum_norm2):
        return math.nan
    return float(np.sqrt(np.sum(sum_norm2)))


def _weakest(sources: list[str]) -> str:
    """A step's source is its least certain micro-batch's: assumed < declared < read;
    "" when no per-sample values were recorded."""
    for source in ("assumed", "declared", "read"):
        if source in sources:
            return source
    return ""


def _concatenate(parts: list[Rows]) -> Rows:
    """Column-wise concatenation of row blocks (numpy arrays, Arrow arrays or lists)."""
    if not parts:
        return {}
    joined: Rows = {}
    for name in parts[0]:
        columns = [part[name] for part in parts]
        if isinstance(columns[0], pa.Array):
            joined[name] = pa.concat_arrays(columns)
        elif isinstance(columns[0], np.ndarray):
            joined[name] = np.concatenate(columns)
        else:
            joined[name] = [value for column in columns for value in column]
    return joined


def _extend(into: dict[str, list[Any]], columns: dict[str, list[Any]]) -> None:
    for name, values in columns.items():
        into.setdefault(name, []).extend(values)


__all__ = ["HostCopy", "MicroStats", "StepRecord"]
