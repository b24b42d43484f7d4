"""The loss behind a backward call, as the script computed it (before GradScaler scaling).

``scaler.scale(loss)`` multiplies by the scale (a power of 2); the wrapper keeps which
tensor it returned, its input and the scale read then (``Scaled``). When the backward's root
is that output, the loss is the input itself: exact, no division. Otherwise (the scaled
loss was transformed before backward) the root is divided by the scale read since the
last backward. Per-sample hook gradients of a scaled backward are divided by ``scale``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from gradscope.record.reduction import Reduction, detect_reduction


@dataclass
class Scaled:
    """One ``GradScaler.scale`` call: weak references to its output and input, the scale."""

    output: Any
    input: Any
    scale: torch.Tensor

    @classmethod
    def of(cls, scaler: Any, outputs: Any, result: Any) -> Scaled | None:
        scale = getattr(scaler, "_scale", None)
        if not isinstance(scale, torch.Tensor) or not scaler.is_enabled():
            return None
        refs = [weakref.ref(t) if isinstance(t, torch.Tensor) else (lambda: None) for t in (result, outputs)]
        return cls(refs[0], refs[1], scale.detach().clone().reshape(()))


@dataclass
class BackwardLoss:
    """The loss of the running backward call."""

    value: torch.Tensor | None  # 0-dim, detached, unscaled; None when the root is not a scalar
    reduction: Reduction | None
    scale: torch.Tensor | None  # the GradScaler scale the root was multiplied by
    per_sample: torch.Tensor | None = None  # [N] losses read exactly from the graph (sample_loss)


def loss_of(
    tensors: Any, grad_tensors: Any, scaled: Scaled | None, read_losses: Callable[[Any], Any] | None = None
) -> BackwardLoss | None:
    """The script's loss behind ``torch.autograd.backward(tensors, grad_tensors)``.

    Several scalar roots with no ``grad_tensors`` (``backward([l1, l2])``) are the sum of
    their values, with a reduction only assumed; roots given gradients have no loss value.
    ``read_losses`` (given on recorded steps) reads a single loss's per-sample values.
    """
    roots = list(tensors) if isinstance(tensors, (tuple, list)) else [tensors]
    if len(roots) == 1:
        return _single_loss(roots[0], scaled, read_losses)
    scale = None if scaled is None else scaled.scale
    weighted = grad_tensors is not None and any(
        g is not None for g in (grad_tensors if isinstance(grad_tensors, (tuple, list)) else [grad_tensors])
    )
    if weighted or not all(isinstance(t, torch.Tensor) and t.dim() == 0 for t in roots):
        return BackwardLoss(None, None, scale)
    total = torch.stack([t.detach() for t in roots]).sum()
    return BackwardLoss(total, Reduction("mean", 1.0, False), scale)


def _single_loss(root: Any, scaled: Scaled | None, read_losses: Any = None) -> BackwardLoss | None:
    if not isinstance(root, torch.Tensor):
        return None
    scale = None if scaled is None else scaled.scale
    loss, divide = root, scale
    if scaled is not None and scaled.output() is root and isinstance(scaled.input(), torch.Tensor):
        loss, divide = scaled.input(), None
    if loss.dim() != 0:
        return BackwardLoss(None, None, scale)
    reduction = detect_reduction(loss)
    value = loss.detach()
    if divide is not None:
        value = value / divide
        reduction = replace(reduction, factor=reduction.factor * float(divide))
    return BackwardLoss(value, reduction, scale, None if read_losses is None else read_losses(loss))


def undivided(losses: list[torch.Tensor], divisor: int | None) -> list[torch.Tensor]:
    """A step's backpropagated losses, each of which a trainer divided by ``divisor`` whatever
    the step's micro-batch count n (Lightning's accumulate_grad_batches, set by its callback),
    times divisor / n: their sum is then the mean micro-batch loss. Unchanged without one."""
    if not divisor or not losses:
        return losses
    return [x.detach() * (divisor / len(losses)) for x in losses]
