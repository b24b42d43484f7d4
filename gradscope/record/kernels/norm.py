"""Per-sample gradients of the affine parameters of LayerNorm, RMSNorm and GroupNorm.

y = xhat (.) gamma + beta, with xhat recomputed from the saved input (the forward without
affine parameters). Per sample, summing over the positions t that share a gamma entry:

    g_i(weight) = sum_t b_it (.) xhat_it      g_i(bias) = sum_t b_it

Both are small (the size of the normalised shape or the channels), so they are dense.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from gradscope.record.kernels.base import Contribution, Dense, KernelInputs, keep, output_grad


def _affine(module: nn.Module, xhat: Tensor, grad: Tensor, reduce: tuple[int, ...]) -> dict:
    """Dense gamma and beta gradients, summed over the ``reduce`` dims (none: [B, d])."""

    def total(t: Tensor) -> Tensor:
        return t.sum(reduce) if reduce else t  # sum(()) would reduce every dim

    result: dict[str, Contribution] = {
        "weight": Dense(total(grad * xhat)),
        "bias": Dense(total(grad)),
    }
    return keep(result, module)


def layer_norm_kernel(
    module: nn.Module, inputs: KernelInputs, backprops: tuple[Tensor, ...]
) -> dict[str, Contribution]:
    """LayerNorm over the last dims: reduce over the positions between batch and those."""
    x = inputs.main_input()
    shape = tuple(module.normalized_shape)
    xhat = F.layer_norm(x, shape, None, None, module.eps)
    reduce = tuple(range(1, x.dim() - len(shape)))
    return _affine(module, xhat, output_grad(inputs, backprops), reduce)


def rms_norm_kernel(
    module: nn.Module, inputs: KernelInputs, backprops: tuple[Tensor, ...]
) -> dict[str, Contribution]:
    """RMSNorm over the last dims (eps None means torch's default, as in the module)."""
    x = inputs.main_input()
    shape = tuple(module.normalized_shape)
    xhat = F.rms_norm(x, shape, None, module.eps)
    reduce = tuple(range(1, x.dim() - len(shape)))
    return _affine(module, xhat, output_grad(inputs, backprops), reduce)


def group_norm_kernel(
    module: nn.Module, inputs: KernelInputs, backprops: tuple[Tensor, ...]
) -> dict[str, Contribution]:
    """GroupNorm on [B, C, *S]: gamma and beta are per channel, reduce over S."""
    x = inputs.main_input()
    xhat = F.group_norm(x, module.num_groups, None, None, module.eps)
    reduce = tuple(range(2, x.dim()))
    return _affine(module, xhat, output_grad(inputs, backprops), reduce)
