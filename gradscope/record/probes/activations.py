"""Activation probes on the input of every Linear / Conv call.

RMS and max |a| (massive activations: Sun et al. 2024, "Massive Activations in Large
Language Models"; Peri-LN, Kim et al. 2025: hidden-state growth), and dead units: the
fraction of input units (features of a Linear, channels of a Conv) that are exactly zero
for every sample and position of the step's recorded batches (a ReLU unit that never
fires: "dying ReLU", Lu et al. 2019; dormant neurons, Sokar et al. 2023). Sums, maxima and
the alive mask accumulate over the calls of a step (micro-batches, a layer called twice).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def unit_dim(module: nn.Module, x: Tensor) -> int | None:
    """The dimension of ``x`` that holds units: features of a Linear (last), channels of a Conv."""
    if isinstance(module, nn.Linear):
        return x.dim() - 1
    if isinstance(module, CONVS):
        spatial = len(module.kernel_size)
        return 1 if x.dim() == spatial + 2 else 0
    return None


def activation_stats(x: Tensor, dim: int) -> dict[str, Tensor]:
    """sumsq, count, max_abs (float32 0-dim) and alive ([units] bool: some entry != 0)."""
    with torch.no_grad():
        x = x.detach()
        flat = x.movedim(dim, -1).reshape(-1, x.shape[dim])
        if not flat.numel():
            zero = torch.zeros((), device=x.device)
            return {"sumsq": zero, "count": zero, "max_abs": zero, "alive": (flat != 0).any(0)}
        low, high = torch.aminmax(flat)
        return {
            "sumsq": torch.linalg.vector_norm(flat, dtype=torch.float32 if flat.element_size() < 4 else None)
            .float().square(),
            "count": torch.tensor(float(flat.numel()), device=x.device),
            "max_abs": torch.maximum(-low, high).float(),
            "alive": (flat != 0).any(0),
        }
