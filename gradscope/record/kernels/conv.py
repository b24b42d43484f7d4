"""Per-sample gradients of ``nn.Conv1d/2d/3d`` by unfolding the input into patches.

The input x: [B, C_in, *S] is padded as the layer pads it and unfolded into patches
[B, G, T, C_in/G * K] (T output positions, K = prod(kernel_size), G groups); the output
gradient [B, C_out, *O] becomes [B, G, T, C_out/G]. Each group is a Linear layer on
patches, so the weight [C_out, C_in/G, *k] gets the factored form with one row block per
group, and the bias g_i = sum_t b_it ([B, C_out]). Stride, padding (numbers, 'same',
'valid', and the non-zero padding modes) and dilation are honoured. <G_i, W> is read from
the kept output when available: sum over positions of b . (y - bias).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from gradscope.record.kernels.base import (
    Contribution,
    Dense,
    Factored,
    KernelInputs,
    keep,
    output_dot,
)


def unfold_patches(module: nn.modules.conv._ConvNd, x: Tensor) -> Tensor:
    """Input [B, C_in, *S] -> patches [B, G, T, C_in/G * K] in the weight's column order.

    1-D and 2-D convolutions use im2col (``F.unfold``) and return a transposed view of its
    [B, C_in*K, T] result (no copy; the consumers' matmuls take strided operands): 3x
    faster than reshaping strided ``Tensor.unfold`` windows, which copies twice.
    """
    dims = len(module.kernel_size)
    if dims in (1, 2):
        return _im2col(module, x)
    x = _pad(module, x)
    for d in range(dims):
        span = module.dilation[d] * (module.kernel_size[d] - 1) + 1
        x = x.unfold(2 + d, span, module.stride[d])  # (B, C, O..., span_d) appended at end
    index = tuple(slice(None, None, dil) for dil in module.dilation)
    x = x[(Ellipsis, *index)]  # (B, C, O1..Od, k1..kd)
    batch, channels = x.shape[:2]
    groups = module.groups
    positions = x.shape[2 : 2 + dims].numel()
    x = x.reshape(batch, groups, channels // groups, positions, -1)  # (B, G, C/G, T, K)
    return x.transpose(2, 3).reshape(batch, groups, positions, -1)  # (B, G, T, C/G*K)


def _pad(module: nn.modules.conv._ConvNd, x: Tensor) -> Tensor:
    mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
    return F.pad(x, module._reversed_padding_repeated_twice, mode=mode)


def _im2col(module: nn.modules.conv._ConvNd, x: Tensor) -> Tensor:
    """Patches of a 1-D or 2-D convolution through ``F.unfold`` (a 1-D one as [B, C, 1, L])."""
    pads = module._reversed_padding_repeated_twice  # (last-dim left, right, previous dim ...)
    symmetric = module.padding_mode == "zeros" and all(
        pads[i] == pads[i + 1] for i in range(0, len(pads), 2)
    )
    padding = tuple(reversed(pads[::2])) if symmetric else (0,) * len(module.kernel_size)
    if not symmetric:
        x = _pad(module, x)
    kernel, dilation, stride = module.kernel_size, module.dilation, module.stride
    if len(kernel) == 1:
        x = x.unsqueeze(2)
        kernel, dilation, stride = ((1, *v) for v in (kernel, dilation, stride))
        padding = (0, *padding)
    cols = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)  # (B, C*K, T)
    batch, features, positions = cols.shape
    groups = module.groups
    return cols.view(batch, groups, features // groups, positions).transpose(2, 3)


def conv_kernel(
    module: nn.Module, inputs: KernelInputs, backprops: tuple[Tensor, ...]
) -> dict[str, Contribution]:
    """Factored weight gradient (per group) and dense bias gradient of a ConvNd call."""
    x = inputs.main_input()
    grad = backprops[0].movedim(inputs.batch_dim, 0)  # (B, C_out, *O)
    unbatched = x.dim() == len(module.kernel_size) + 1
    if unbatched:
        raise ValueError("unbatched convolution input has no batch dim")
    patches = unfold_patches(module, x)
    batch, out_channels = grad.shape[:2]
    groups = module.groups
    grad = grad.reshape(batch, groups, out_channels // groups, -1).transpose(2, 3)
    bias_grad = grad.sum(2).reshape(batch, out_channels)
    # y: [B, C_out, *O] holds W patches + bias (broadcast over positions) for every group
    dot = output_dot(module, inputs, backprops, bias_grad)
    result: dict[str, Contribution] = {
        "weight": Factored(left=grad, right=patches, weight_dot=dot),
        "bias": Dense(bias_grad),
    }
    return keep(result, module)
