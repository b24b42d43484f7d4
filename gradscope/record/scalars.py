"""Per-parameter scalars on recorded steps, computed on the training device.

Each function returns one 1-D float64 tensor with a value per parameter, so one
asynchronous device-to-host copy carries a whole step. Nothing here reads a value back.
Norms of half-precision tensors accumulate in float32.
"""

from __future__ import annotations

import torch

Tensors = list[torch.Tensor]
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _norm(tensor: torch.Tensor) -> torch.Tensor:
    dtype = torch.float32 if tensor.dtype in _LOW_PRECISION else None
    return torch.linalg.vector_norm(tensor.detach(), dtype=dtype)


def _stack(values: Tensors) -> torch.Tensor:
    if not values:
        return torch.zeros(0, dtype=torch.float64)
    device = values[0].device
    return torch.stack([v.to(device=device, dtype=torch.float64) for v in values])


def norms(tensors: Tensors) -> torch.Tensor:
    """||t|| for each tensor."""
    return _stack([_norm(t) for t in tensors])


def grad_norms(params: Tensors) -> torch.Tensor:
    """||grad|| per parameter; a parameter without a gradient counts as 0."""
    return _stack(
        [_norm(p.grad) if p.grad is not None else torch.zeros((), device=p.device) for p in params]
    )


def distances(params: Tensors, references: Tensors) -> torch.Tensor:
    """||p - r|| per parameter; a reference may live on another device (moved one at a time)."""
    return _stack(
        [
            _norm(p.detach() - r.to(device=p.device, dtype=p.dtype, non_blocking=True))
            for p, r in zip(params, references)
        ]
    )


def snapshot(params: Tensors, device: torch.device | str | None = None) -> Tensors:
    """Detached copies of the parameters (on ``device`` if given, else where they are)."""
    return [p.detach().to(device=device or p.device, copy=True) for p in params]
