"""Per-sample (per-bag) gradients of ``nn.EmbeddingBag`` in modes "sum" and "mean".

Bag j holds positions t (a row of a 2-D input, or ``input[offsets[j]:offsets[j+1]]`` of a
flat input) and outputs y_j = sum_t w_t W[id_t], with w_t = 1 ("sum"), the per-sample weight
("sum" with ``per_sample_weights``), or 1/n_j ("mean", n_j the non-padding positions). Its
gradient is G_j = sum_t onehot(id_t)^T (w_t b_j), kept factored as in ``embedding``: row ids
[B, 1, T] padded with -1 (padding_idx and ragged ends give no gradient) and R_jt = w_t b_j.
A bag is a sample: the batch is the number of bags, never the number of ids. Mode "max"
and ``scale_grad_by_freq`` are not covered.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gradscope.record.kernels.base import Contribution, Factored, KernelInputs, keep


def bag_problem(module: nn.EmbeddingBag) -> str | None:
    """Why an EmbeddingBag is not covered, or None."""
    if module.mode == "max":
        return "EmbeddingBag mode='max' routes each coordinate to one id: not covered"
    if module.scale_grad_by_freq:
        return "scale_grad_by_freq couples samples through counts"
    return None


def _argument(inputs: KernelInputs, index: int, key: str) -> Tensor | None:
    args = inputs.args
    return args[index] if len(args) > index else inputs.kwargs.get(key)


def embedding_bag_kernel(
    module: nn.Module, inputs: KernelInputs, backprops: tuple[Tensor, ...]
) -> dict[str, Contribution]:
    """Row-id factored gradient of one call of an EmbeddingBag, one row per bag."""
    ids = _argument(inputs, 0, "input")
    offsets = _argument(inputs, 1, "offsets")
    weights = _argument(inputs, 2, "per_sample_weights")
    grad = backprops[0]  # (bags, d)
    bags = grad.shape[0]
    if ids.dim() == 2:
        length = ids.shape[1]
        offsets = torch.arange(0, ids.numel() + 1, max(length, 1), device=ids.device)[: bags + 1]
        ids = ids.reshape(-1)
        weights = None if weights is None else weights.reshape(-1)
    elif not module.include_last_offset:
        offsets = torch.cat([offsets, offsets.new_tensor([ids.numel()])])
    offsets = offsets[: bags + 1].long()
    lengths = offsets[1:] - offsets[:-1]
    bag = torch.repeat_interleave(torch.arange(bags, device=ids.device), lengths)
    position = torch.arange(ids.numel(), device=ids.device) - offsets[bag]
    ids = ids[: bag.numel()].long()
    kept = torch.ones_like(ids, dtype=torch.bool)
    if module.padding_idx is not None:
        kept = ids != module.padding_idx
    scale = torch.ones(ids.shape, dtype=grad.dtype, device=grad.device)
    if weights is not None:
        scale = weights[: bag.numel()].to(grad.dtype)
    if module.mode == "mean":
        counts = grad.new_zeros(bags).index_add_(0, bag, kept.to(grad.dtype))
        scale = scale / counts.clamp(min=1)[bag]
    longest = int(lengths.max()) if bags else 0
    left = torch.full((bags, max(longest, 1)), -1, dtype=torch.long, device=ids.device)
    left[bag, position] = torch.where(kept, ids, torch.full_like(ids, -1))
    right = grad.new_zeros(bags, max(longest, 1), grad.shape[1])
    right[bag, position] = scale[:, None] * grad[bag]
    return keep({"weight": Factored(left=left[:, None], right=right[:, None])}, module)
