"""How a scalar loss reduces over samples, read from its autograd graph.

Hooks see gradients of the batch loss. For ``loss = mean_i l_i`` a sample's hook
gradient is ``g_i / B``; for ``sum_i l_i`` it is ``g_i``; ``loss / k`` (gradient
accumulation) divides once more. ``per_sample_factor`` returns the factor f such that
``g_i = f * hook gradient`` with ``f = k * B`` (mean) or ``k`` (sum), where k collects
divisions and multiplications by Python numbers on top of the reduction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_MEAN, _SUM = 1, 2  # torch's at::Reduction codes, as saved by *LossBackward nodes


@dataclass(frozen=True)
class Reduction:
    kind: str  # "mean" | "sum"
    factor: float  # product of scalar factors between the loss and its reduction
    detected: bool  # False: could not tell, "mean" assumed


def _scalar(value: object) -> float | None:
    """A Python number or a CPU 0-dim tensor as float, else None (never syncs a device)."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, torch.Tensor) and value.device.type == "cpu" and value.dim() == 0:
        return float(value)
    return None


def detect_reduction(loss: torch.Tensor) -> Reduction:
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
            return Reduction("mean" if code == _MEAN else "sum", factor, True)
        scalar = _scalar(getattr(node, "_saved_other", None))
        if name.startswith("Div") and scalar:
            factor *= scalar
        elif name.startswith("Mul") and scalar:
            factor /= scalar
        elif not name.startswith("Add"):
            break
        node = node.next_functions[0][0]
    return Reduction("mean", factor, False)


def per_sample_factor(reduction: Reduction, batch_size: int, forced: str = "auto") -> float:
    kind = reduction.kind if forced == "auto" else forced
    return reduction.factor * (batch_size if kind == "mean" else 1)
