"""Per-sample gradients of ``nn.Embedding``: y_t = W[id_t], W: [V, d].

The per-sample gradient scatters the output gradients b_it into the rows of the ids:
G_i = sum_t onehot(id_t)^T b_it, kept factored with L as row ids [B, 1, T] (never a
[T, V] one-hot) and R = b: [B, 1, T, d]. Positions holding ``padding_idx`` get no gradient
from torch, so they are marked -1 and excluded. ghost norm: sum_{t,s: id_t = id_s} b_it . b_is.
``scale_grad_by_freq`` couples samples and is declared not covered by the engine.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gradscope.record.kernels.base import (
    Contribution,
    Factored,
    KernelInputs,
    flatten_positions,
    keep,
    output_grad,
)


def embedding_kernel(
    module: nn.Module, inputs: KernelInputs, backprops: tuple[Tensor, ...]
) -> dict[str, Contribution]:
    """Row-id factored gradient of one call of an Embedding."""
    ids = inputs.main_input()
    ids = ids.reshape(ids.shape[0], 1, -1).long()  # (B, 1, T)
    if module.padding_idx is not None:
        ids = torch.where(ids == module.padding_idx, torch.full_like(ids, -1), ids)
    grads = flatten_positions(output_grad(inputs, backprops))  # (B, 1, T, d)
    return keep({"weight": Factored(left=ids, right=grads)}, module)
