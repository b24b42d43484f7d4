r"""Per-task gradients: the K x K Gram of named task losses, per layer (DESIGN.md section 5).

``gradscope.tasks(seg=l_seg, depth=l_depth)`` hands the step's task losses to the
recorder before the user's backward. With g_k the gradient of task k's loss on a layer's
parameters (all of them concatenated), the recorder stores per layer

    G_ab = <g_a, g_b>        [K, K]   (TASKS; cos(g_a, g_b) = G_ab / sqrt(G_aa G_bb))

and, when the losses are per-sample vectors ([B]), per sample i and layer

    D_iab = <g_i^a, g_i^b>   [B, K, K] (TASK_SAMPLES; g_i^k the gradient of loss_k[i])

Letters: K tasks, B samples, P parameters. A scalar task loss is used as it is; a
per-sample one enters G through its mean (the batch gradient a mean-reduced loss gives).

How. One batched backward: ``torch.autograd.grad`` of the stacked losses with
``grad_outputs = I_K`` and ``is_grads_batched=True`` (vmap over the backward graph) gives
every task's gradient at once, [K, *shape] per parameter, while keeping the graph for the
user's own backward (``retain_graph=True``). Where vmap has no rule for an op of the graph
(the call raises), K ordinary passes of ``autograd.grad`` do the same; ``mode`` forces one.
Then G = sum over the layer's parameters of F F^T with F = grad.reshape(K, -1). Memory:
K gradients of the model at a time. A parameter no task reaches (allow_unused) and the rows
of tasks that do not reach it are zeros: a task-specific head shows norm 0 for the other
tasks, and the analysis excludes such layers for those pairs.

Per-sample tasks also differentiate, in the same batched call, with respect to the module
outputs the per-sample engine has hooked (``PerSampleEngine.task_targets``); row k of those
output gradients, times B (the mean's 1/B undone), is b^k, and the engine's kernels turn
(saved inputs, b^k) into D without B backward passes (``task_sample_gram``).

The engine is suspended around these extra calls, so its output hooks do not mistake them
for the user's backward; the patched ``torch.autograd.backward`` is never called. Nothing
is read back to the host here: results stay on the device until the writer thread copies
them.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

MODES = ("auto", "batched", "loop")


@dataclass
class TaskStats:
    """One ``tasks()`` call's results, tensors on the device (rows built in the writer)."""

    names: list[str]  # K task names, in the order given
    layers: list[str]  # L layers with trainable parameters
    gram: Tensor  # [L, K, K] G_ab = <g_a, g_b> per layer
    sample_names: list[str]  # K' per-sample tasks ([B] losses), in order
    sample_layers: list[str]  # L' layers the per-sample engine can split by task
    sample_gram: Tensor | None  # [L', B, K', K'] D_iab = <g_i^a, g_i^b>, None when K' < 2


def task_losses(losses: dict[str, Any]) -> tuple[list[str], list[Tensor]]:
    """Validate the named losses: tensors, scalar or [B] (the same B for every vector)."""
    if not losses:
        raise ValueError("gradscope.tasks() needs at least one named loss")
    names, tensors = list(losses), list(losses.values())
    for name, loss in zip(names, tensors):
        if not isinstance(loss, Tensor) or loss.dim() > 1 or not loss.is_floating_point():
            kind = type(loss).__name__ if not isinstance(loss, Tensor) else f"tensor {tuple(loss.shape)}"
            raise ValueError(f"task {name!r}: expected a float scalar or [B] tensor, got {kind}")
    sizes = {loss.shape[0] for loss in tensors if loss.dim() == 1}
    if len(sizes) > 1:
        raise ValueError(f"per-sample task losses disagree on the batch size: {sorted(sizes)}")
    return names, tensors


def batched_grad(
    outputs: Tensor, inputs: Sequence[Any], mode: str = "auto"
) -> list[Tensor | None]:
    """Gradients of each entry of ``outputs`` ([K]) w.r.t. ``inputs``: [K, *shape] or None.

    ``batched``: one vmapped backward (``is_grads_batched``); ``loop``: K backward passes;
    ``auto``: batched, falling back to the loop when vmap raises. The graph is retained.
    """
    if mode != "loop":
        try:
            eye = torch.eye(outputs.shape[0], dtype=outputs.dtype, device=outputs.device)
            with warnings.catch_warnings():  # vmap's "performance drop" notes are not the user's
                warnings.simplefilter("ignore")
                return list(
                    torch.autograd.grad(
                        outputs, inputs, grad_outputs=eye, is_grads_batched=True,
                        retain_graph=True, allow_unused=True,
                    )
                )
        except RuntimeError:
            if mode == "batched":
                raise
    passes = [
        torch.autograd.grad(output, inputs, retain_graph=True, allow_unused=True)
        for output in outputs.unbind(0)
    ]
    return [_stack_rows([p[index] for p in passes]) for index in range(len(inputs))]


def _stack_rows(rows: list[Tensor | None]) -> Tensor | None:
    """[K, *shape] from K per-task gradients, zeros where a task gave None; None if all did."""
    present = next((r for r in rows if r is not None), None)
    if present is None:
        return None
    return torch.stack([torch.zeros_like(present) if r is None else r for r in rows])


def layer_grams(
    grads: Sequence[Tensor | None], params: Sequence[Tensor], layers: Sequence[str], tasks: int
) -> tuple[list[str], Tensor]:
    """Per layer, G = sum over its parameters of F F^T, F = grad.reshape(K, -1): [L, K, K].

    ``layers[p]`` names parameter p's layer; parameters with no gradient count as zeros.
    Computed in the parameters' dtype promoted to float32.
    """
    by_layer: dict[str, list[Tensor]] = {}
    for grad, param, layer in zip(grads, params, layers, strict=True):
        dtype = torch.promote_types(param.dtype, torch.float32)
        if grad is None:
            by_layer.setdefault(layer, []).append(param.new_zeros(tasks, tasks, dtype=dtype))
            continue
        flat = grad.reshape(tasks, -1).to(dtype)
        by_layer.setdefault(layer, []).append(flat @ flat.t())
    names = list(by_layer)
    return names, torch.stack([torch.stack(parts).sum(0) for parts in by_layer.values()])


def task_stats(
    losses: dict[str, Any],
    params: Sequence[Tensor],
    layers: Sequence[str],
    engine: Any = None,
    mode: str = "auto",
) -> TaskStats | None:
    """The task Grams of one step (see the module docstring); None when no loss needs grad.

    ``params`` are the trainable parameters and ``layers`` their layer names; ``engine``
    (a PerSampleEngine or None) gives per-sample task conflict for [B] losses.
    """
    names, tensors = task_losses(losses)
    if not any(t.requires_grad for t in tensors) or not params:
        return None
    dtype = functools.reduce(torch.promote_types, [t.dtype for t in tensors], torch.float32)
    outputs = torch.stack([(t if t.dim() == 0 else t.mean()).to(dtype) for t in tensors])
    per_sample = [k for k, t in enumerate(tensors) if t.dim() == 1]
    batch = tensors[per_sample[0]].shape[0] if per_sample else 0
    targets = None
    if engine is not None and len(per_sample) >= 2:
        targets = engine.task_targets(batch)
    edges = targets.edges if targets is not None else []
    grads = batched_grad(outputs, [*params, *edges], mode)
    layer_names, gram = layer_grams(grads[: len(params)], params, layers, len(names))
    sample_layers: list[str] = []
    sample_gram = None
    if targets is not None and targets.uses:
        output_grads = [
            None if g is None else torch.stack([g[k] for k in per_sample]) * batch
            for g in grads[len(params):]
        ]
        by_layer = engine.task_sample_gram(targets, output_grads, len(per_sample))
        if by_layer:
            sample_layers = list(by_layer)
            sample_gram = torch.stack([by_layer[name] for name in sample_layers])
    return TaskStats(
        names=names,
        layers=layer_names,
        gram=gram,
        sample_names=[names[k] for k in per_sample] if sample_gram is not None else [],
        sample_layers=sample_layers,
        sample_gram=sample_gram,
    )


class TaskRecorder:
    """The recorder's side of ``gradscope.tasks()``: finds the parameters and their layer
    names, suspends the per-sample engine around the extra backward, returns ``TaskStats``.
    """

    def __init__(self, mode: str = "auto") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode

    def record(self, losses: dict[str, Any], recorder: Any) -> TaskStats | None:
        """Task Grams for the recorder's known models; the engine is restored in any case."""
        names = recorder._names
        params = names.parameters()
        layers = [names.param(p)[0] for p in params]
        engine = recorder._engine
        suspended = engine.suspended if engine is not None else False
        if engine is not None:
            engine.suspended = True
        try:
            return task_stats(losses, params, layers, engine, self.mode)
        except RuntimeError as error:
            if "second time" in str(error) or "freed" in str(error):
                raise RuntimeError(
                    "the loss graph was already freed: call gradscope.tasks() before backward"
                ) from error
            raise
        finally:
            if engine is not None:
                engine.suspended = suspended


__all__ = ["MODES", "TaskRecorder", "TaskStats", "batched_grad", "layer_grams", "task_stats"]
