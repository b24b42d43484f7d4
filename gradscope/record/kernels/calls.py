"""The engine's per-call state (one ``Use`` per module call, one ``Entry`` per parameter)
and the split of pending calls' per-sample gradients by task (``TaskSplit``, mixed into
``PerSampleEngine``; used by ``gradscope.record.tasks``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.graph import get_gradient_edge

from gradscope.record.kernels import FACTORED, NORM_AFFINE
from gradscope.record.kernels.base import Contribution, Kernel, KernelInputs
from gradscope.record.kernels.batch import CallBatch
from gradscope.record.kernels.stats import task_dots


@dataclass
class Use:
    """One call of one module in the current forward."""

    name: str
    layer: str  # the layer it reports to (a parametrization's owner)
    module: nn.Module
    kernel: Kernel
    inputs: KernelInputs | None
    params: dict[str, nn.Parameter]
    out_meta: list[tuple[torch.Size, torch.dtype, torch.device]]
    grads: list[Tensor | None]
    waiting: int
    generation: int
    batch: CallBatch
    in_backward: bool  # captured while a backward runs (a checkpoint's recomputation)
    done: bool = False
    received: bool = False  # some output got a gradient (set when evaluated)
    edges: list[Any] = field(default_factory=list)  # GradientEdge per hooked output (tasks)


@dataclass
class TaskTargets:
    """Pending module calls whose per-sample gradients can be split by task (see
    ``PerSampleEngine.task_targets``); ``edges`` are their hooked outputs, in order."""

    uses: list[Use]
    edges: list[Any]


@dataclass
class Entry:
    """One Parameter in the current forward, with the contributions of its uses."""

    param: nn.Parameter
    layer: str  # the first module that used it
    qualname: str
    remaining: int = 0
    live: int = 0  # evaluated uses that were not dropped (see PerSampleEngine._evaluate)
    contributions: list[Contribution] = field(default_factory=list)
    failed: bool = False
    finished: bool = False


class TaskSplit:
    """Per-sample cross-task dots of the pending calls (state lives in the engine)."""

    # ----------------------------------------------------------------- per-sample tasks
    def task_targets(self, batch: int) -> TaskTargets:
        """The pending calls whose kernels can split per-sample gradients by task.

        Factored (Linear, Conv, Embedding, GPT-2 Conv1D) and norm-affine families only:
        the torch.func fallback would replay the module once per task, so its layers are
        left out of per-sample task conflict. Call between the forward and the backward;
        differentiate the tasks with respect to ``edges`` and pass the result to
        ``task_sample_gram``. Empty when ``batch`` (the task losses' B) is not the B the
        engine saw.
        """
        self._resolve()
        if batch != self._batch_size or self._drop:
            return TaskTargets(uses=[], edges=[])
        uses = [
            use
            for use in self._uses
            if use.generation == self._generation and not use.done and use.inputs is not None
            and use.edges and all(e is not None for e in use.edges) and use.name not in self._disabled
            and self._registry.lookup(use.module)[0] in (FACTORED, NORM_AFFINE)
        ]
        return TaskTargets(uses=uses, edges=[edge for use in uses for edge in use.edges])

    def task_sample_gram(
        self, targets: TaskTargets, output_grads: Sequence[Tensor | None], tasks: int
    ) -> dict[str, Tensor]:
        r"""Per layer, D[i, a, b] = <g_i^a, g_i^b>: [B, K, K] per-sample cross-task dots.

        ``output_grads[e]`` is [K, *output shape] (row k: the gradient of task k's summed
        per-sample loss with respect to ``targets.edges[e]``), or None when no task reaches
        that output. Row i of an output gradient is then sample i's own loss gradient, so D
        is in the per-sample-loss convention (no rescaling). Each call's kernel runs once
        per task; ``kernels.stats.task_dots`` combines a parameter's uses. A layer is
        reported only when every use of each of its parameters is a target. Does not touch
        the state ``collect`` uses; raises on failure (the caller guards).
        """
        batch = self._batch_size
        if batch is None or not targets.uses:
            return {}
        targeted: dict[int, int] = {}
        for use in targets.uses:
            for param in use.params.values():
                targeted[id(param)] = targeted.get(id(param), 0) + 1
        layers = self._task_layers(targeted)
        per_param: dict[int, list[list[Contribution]]] = {}
        grads = iter(output_grads)
        for use in targets.uses:
            use_grads = [next(grads) for _ in use.edges]
            if all(g is None for g in use_grads) or not all(
                self._entries[id(p)].layer in layers for p in use.params.values()
            ):
                continue
            for task in range(tasks):
                for attr, contribution in self._task_contributions(use, use_grads, task).items():
                    slots = per_param.setdefault(id(use.params[attr]), [[] for _ in range(tasks)])
                    slots[task].append(contribution)
        result: dict[str, Tensor] = {}
        for layer in self._layer_order:
            for entry in layers.get(layer, []):
                contributions = per_param.get(id(entry.param), [[] for _ in range(tasks)])
                dots = task_dots(entry.param, contributions, batch, self.config.route)
                result[layer] = dots if layer not in result else result[layer] + dots
        return result

    def _task_layers(self, targeted: dict[int, int]) -> dict[str, list[Entry]]:
        """Layers all of whose parameters have every pending use among the targets."""
        layers: dict[str, list[Entry]] = {}
        excluded: set[str] = set(self._missing)
        for entry in self._entries.values():
            whole = targeted.get(id(entry.param), 0) == entry.remaining > 0
            if entry.failed or entry.finished or id(entry.param) in self._uncaptured or not whole:
                excluded.add(entry.layer)
            layers.setdefault(entry.layer, []).append(entry)
        return {name: entries for name, entries in layers.items() if name not in excluded}

    def _task_contributions(
        self, use: Use, grads: list[Tensor | None], task: int
    ) -> dict[str, Contribution]:
        """One call's kernel on task ``task``'s output gradients (missing ones are zeros)."""
        backprops = tuple(
            g[task] if g is not None else torch.zeros(shape, dtype=dtype, device=device)
            for g, (shape, dtype, device) in zip(grads, use.out_meta, strict=True)
        )
        self._in_kernel = True
        try:
            return use.kernel(use.module, use.inputs, backprops)
        finally:
            self._in_kernel = False


def graph_task() -> int:
    """The running autograd graph task, -1 outside any backward."""
    return torch._C._current_graph_task_id()


def check_output_not_rewritten(inputs: KernelInputs) -> None:
    """No output gradient arrived and the kept output was modified in place: torch drops a
    tensor hook when a view (e.g. a Linear's output on [B, T, d]) is modified in place, so
    zeros would be wrong. Raise (the layer fails) rather than report g_i = 0."""
    if inputs.output is not None and inputs.output._version != inputs.versions[0][1]:
        raise RuntimeError(
            "the layer's output was modified in place and its gradient hook never fired"
        )


def gradient_edge(tensor: Tensor) -> Any:
    """Where a task backward can stop at this output (``task_targets``); None if unavailable."""
    try:
        return get_gradient_edge(tensor)
    except Exception:  # noqa: BLE001 - only per-sample task conflict needs it
        return None


def detach(x: Any) -> Any:
    return x.detach() if isinstance(x, Tensor) else x
