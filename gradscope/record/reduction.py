"""How a scalar loss reduces over samples, read from its autograd graph.

Hooks see gradients of the batch loss: sample i's hook gradient is its exact contribution
c_i to the gradient (sum_i c_i = the batch gradient), which gradscope stores. The
per-sample-loss gradient is g_i = f c_i with f = k B for ``loss = k' mean_i l_i`` (k = 1/k')
and f = k for a sum; ``loss / 4`` (gradient accumulation) gives k = 4. f is exact only when
the loss is a plain mean or sum over the batch (DESIGN.md section 4): a class-weighted or
label-smoothed loss, ``ignore_index`` hitting a target, or extra terms added to the
reduction leave no uniform f, and f is then an assumption. ``per_sample_factor`` returns
f and how it was known: "declared" (``--reduction``), "read" (exact, from the graph) or
"assumed".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

_MEAN, _SUM = 1, 2  # torch's at::Reduction codes, as saved by *LossBackward nodes
DECLARED, READ, ASSUMED = "declared", "read", "assumed"


@dataclass(frozen=True)
class Reduction:
    kind: str  # "mean" | "sum"
    factor: float  # k: product of scalar factors between the loss and its reduction
    exact: bool | torch.Tensor  # a plain mean/sum; a 0-dim bool tensor when only the device knows


def _scalar(value: object) -> float | None:
    """A Python number or a CPU 0-dim tensor as float, else None (never syncs a device)."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, torch.Tensor) and value.device.type == "cpu" and value.dim() == 0:
        return float(value)
    return None


def _loss_node_exact(node: object, code: int) -> bool | torch.Tensor:
    """A *LossBackward node is a plain reduction: no class weights, no ignored target."""
    if any(getattr(node, name, None) is not None for name in ("_saved_weight", "_saved_pos_weight")):
        return False
    total = getattr(node, "_saved_total_weight", None)  # nll_loss: count of kept targets
    target = getattr(node, "_saved_target", None)
    if code != _MEAN or not isinstance(total, torch.Tensor) or not isinstance(target, torch.Tensor):
        return True
    kept_all = total.detach().reshape(()) == target.numel()
    return bool(kept_all) if kept_all.device.type == "cpu" else kept_all


def detect_reduction(loss: torch.Tensor) -> Reduction:
    """Walk scalar Mul/Div down to the reduction. An Add above it (``reg + ce``, label
    smoothing) leaves no uniform f: the default, a mean with the factors above the Add, is
    then assumed, whichever term comes first."""
    node, factor = loss.grad_fn, 1.0
    for _ in range(16):  # scalar arithmetic stacked on a reduction is shallow
        if node is None:
            break
        name = type(node).__name__
        if name.startswith("Mean"):
            return Reduction("mean", factor, True)
        if name.startswith("Sum"):
            return Reduction("sum", factor, True)
        code = getattr(node, "_saved_reduction", None)
        if code in (_MEAN, _SUM):
            return Reduction("mean" if code == _MEAN else "sum", factor, _loss_node_exact(node, code))
        scalar = _scalar(getattr(node, "_saved_other", None))
        if not (scalar and name.startswith(("Div", "Mul"))):
            break  # Add (several terms) or anything else: f is an assumption
        factor = factor * scalar if name.startswith("Div") else factor / scalar
        node = node.next_functions[0][0]
    return Reduction("mean", factor, False)


def per_sample_factor(
    reduction: Reduction, batch_size: int, forced: str = "auto"
) -> tuple[float, str | torch.Tensor]:
    """(f, source): f = k B (mean) or k (sum); source "declared", "read" or "assumed",
    or a 0-dim bool tensor (True: "read") resolved off the training thread."""
    kind = reduction.kind if forced == "auto" else forced
    factor = reduction.factor * (batch_size if kind == "mean" else 1)
    if forced != "auto":
        return factor, DECLARED
    if isinstance(reduction.exact, torch.Tensor):
        return factor, reduction.exact
    return factor, READ if reduction.exact else ASSUMED


def step_factor(factors: list[tuple[float, Any]]) -> tuple[float, list[Any]]:
    """A step's f (NaN when its micro-batches disagree or none was measured) and the
    sources of its micro-batches (strings, or bool tensors resolved in the writer thread)."""
    values = {f for f, _ in factors}
    scale = values.pop() if len(values) == 1 else math.nan
    return float(scale), [source for _, source in factors]
