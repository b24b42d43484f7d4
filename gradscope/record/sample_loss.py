"""SAMPLES.loss read from the loss's autograd graph, where it is exact.

A loss built as ``criterion(out, y)`` (mean or sum reduction) or
``criterion(out, y, reduction="none").mean()`` / ``.sum()``, times or divided by scalars
(gradient accumulation), ends in a loss node that saved its inputs for the backward:
``NllLossBackward0`` (``cross_entropy`` / ``nll_loss``) its log-probabilities, target,
class weights and ignore_index; ``MseLossBackward0``, ``SmoothL1LossBackward0``,
``HuberLossBackward0`` and ``BinaryCrossEntropyWithLogitsBackward0`` their input and
target. Calling the same criterion with ``reduction="none"`` on the saved tensors gives,
bit for bit, what the script's own ``reduction="none"`` call would give; each sample's
loss is that value, averaged over the sample's non-batch elements (a sequence's tokens,
a regression target's outputs; for cross_entropy / nll_loss the mean over its targets
that are not ``ignore_index``, and NaN for a sample whose targets are all ignored).
Anything else (an added term, a mask multiplied in,
label smoothing, a mean over some dimensions only) is not read: the column stays NaN
unless the script declares its losses with ``gradscope.losses(per_sample)``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

_NONE, _MEAN, _SUM = 0, 1, 2  # torch's at::Reduction codes
_SCALAR_OPS = ("MulBackward0", "DivBackward0")


def _scalar_op(node: Any) -> bool:
    other = getattr(node, "_saved_other", None)
    return type(node).__name__ in _SCALAR_OPS and (
        isinstance(other, (int, float)) or (isinstance(other, torch.Tensor) and other.dim() == 0)
    )


def _recompute(node: Any) -> torch.Tensor | None:
    """The loss node's elementwise (reduction="none") values, or None for another node."""
    name = type(node).__name__
    get = lambda attr: getattr(node, f"_saved_{attr}", None)  # noqa: E731
    if name == "NllLossBackward0":
        ignore = int(get("ignore_index"))
        ignore = ignore - (1 << 64) if ignore >= 1 << 63 else ignore  # saved as an unsigned int64
        return F.nll_loss(get("self"), get("target"), get("weight"), ignore_index=ignore, reduction="none")
    if name == "MseLossBackward0":
        return F.mse_loss(get("self"), get("target"), reduction="none")
    if name == "SmoothL1LossBackward0":
        return F.smooth_l1_loss(get("self"), get("target"), reduction="none", beta=get("beta"))
    if name == "HuberLossBackward0":
        return F.huber_loss(get("self"), get("target"), reduction="none", delta=get("delta"))
    if name == "BinaryCrossEntropyWithLogitsBackward0":
        return F.binary_cross_entropy_with_logits(
            get("self"), get("target"), get("weight"), pos_weight=get("pos_weight"), reduction="none"
        )
    return None


def _loss_node(root: torch.Tensor) -> Any:
    """The criterion node under scalar Mul/Div and one full mean/sum, or None."""
    node = root.grad_fn
    for _ in range(16):
        if node is None:
            return None
        if not _scalar_op(node):
            break
        node = node.next_functions[0][0]
    if node is None:
        return None
    code = getattr(node, "_saved_reduction", None)
    if code in (_MEAN, _SUM):
        return node
    if type(node).__name__ in ("MeanBackward0", "SumBackward0"):
        inner = node.next_functions[0][0]
        if inner is not None and getattr(inner, "_saved_reduction", None) == _NONE:
            return inner
    return None


def graph_losses(root: torch.Tensor) -> torch.Tensor | None:
    """[N] per-sample losses (float64, detached, on the loss's device) of a scalar loss
    whose graph holds them exactly; None otherwise. Call before the backward frees the
    saved tensors."""
    if not isinstance(root, torch.Tensor) or root.dim() != 0 or root.grad_fn is None:
        return None
    node = _loss_node(root)
    if node is None:
        return None
    with torch.no_grad():
        values = _recompute(node)
        if values is None or values.dim() == 0:
            return None
        counted = _nll_counted(node)
    values = values.detach().double().reshape(values.shape[0], -1)
    if counted is None:
        return values.mean(dim=1)
    count = counted.reshape(values.shape[0], -1).sum(dim=1)
    return torch.where(count > 0, values.sum(dim=1) / count.clamp(min=1), torch.nan)


def _nll_counted(node: Any) -> torch.Tensor | None:
    """For an NLL node, 1 for each target that is not ``ignore_index``, else 0: a sample's
    loss is the mean of its reduction="none" values over its counted targets, and NaN when
    all its targets are ignored (not 0, which would read as learned)."""
    if type(node).__name__ != "NllLossBackward0":
        return None
    ignore = int(node._saved_ignore_index)
    ignore = ignore - (1 << 64) if ignore >= 1 << 63 else ignore
    return (node._saved_target != ignore).double()
