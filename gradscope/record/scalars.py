"""Per-parameter scalars on recorded steps, computed on the training device.

Each function returns one 1-D float64 tensor with a value per parameter, so one
asynchronous device-to-host copy carries a whole step. Nothing here reads a value back.
Norms run as one fused ``torch._foreach_norm`` per (device, dtype) group; half-precision
tensors are accumulated in float32. A sparse tensor (``nn.Embedding(sparse=True)``'s
gradient) counts by its coalesced values: the same norm as its dense form.
"""

from __future__ import annotations

from collections import defaultdict

import torch

Tensors = list[torch.Tensor]
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def norms(tensors: Tensors) -> torch.Tensor:
    """||t|| for each tensor, in the input order."""
    if not tensors:
        return torch.zeros(0, dtype=torch.float64)
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
    for index, tensor in enumerate(tensors):
        groups[(tensor.device, tensor.dtype)].append(index)
    device = tensors[0].device
    result = torch.empty(len(tensors), dtype=torch.float64, device=device)
    for (_, dtype), indices in groups.items():
        members = [_values(tensors[i].detach()) for i in indices]
        if dtype in _LOW_PRECISION:
            members = [m.float() for m in members]
        values = torch.stack(torch._foreach_norm(members)).to(device=device, dtype=torch.float64)
        result[torch.tensor(indices, device=device)] = values
    return result


def _values(tensor: torch.Tensor) -> torch.Tensor:
    """The stored values of a tensor: a sparse COO tensor's coalesced values, else itself."""
    if tensor.layout == torch.sparse_coo:
        return tensor.coalesce().values()
    if tensor.layout != torch.strided:
        return tensor.values()  # compressed layouts (CSR, ...) hold no duplicates
    return tensor


def grad_norms(params: Tensors) -> torch.Tensor:
    """||grad|| per parameter; a parameter without a gradient counts as 0."""
    return norms([p.grad if p.grad is not None else p.new_zeros(()) for p in params])


def distances(params: Tensors, references: Tensors) -> torch.Tensor:
    """||p - r|| per parameter; a reference may live on another device (moved one at a time,
    so the transient memory is one parameter, not the model)."""
    if not params:
        return torch.zeros(0, dtype=torch.float64)
    return norms(
        [
            p.detach() - r.to(device=p.device, dtype=p.dtype, non_blocking=True)
            for p, r in zip(params, references)
        ]
    )


def snapshot(params: Tensors, device: torch.device | str | None = None) -> Tensors:
    """Detached copies of the parameters (on ``device`` if given, else where they are)."""
    return [p.detach().to(device=device or p.device, copy=True) for p in params]
