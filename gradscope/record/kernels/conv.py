"""Per-sample gradients of ``nn.Conv1d/2d/3d`` by unfolding the input into patches.

The input x: [B, C_in, *S] is padded as the layer pads it and unfolded into patches
[B, G, T, C_in/G * K] (T output positions, K = prod(kernel_size), G groups); the output
gradient [B, C_out, *O] becomes [B, G, T, C_out/G]. Each group is a Linear layer on
patches, so the weight [C_out, C_in/G, *k] gets the factored form with one row block per
group, and the bias g_i = sum_t b_it ([B, C_out]). Stride, padding (numbers, 'same',
'valid', and the non-zero padding modes) and dilation are honoured. <G_i, W> is read from
the kept output when available: sum over positions of b . (y - bias). Where the route
materialises (2 T^2 >= P Q, or forced), the weight's per-sample gradient is computed
densely by one grouped weight-gradient convolution instead (``per_sample_weight_grad``).
"""

from __future__ import annotations

import torch
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


def _padded(module: nn.modules.conv._ConvNd, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """x and the padding left for the convolution itself: zero padding that is the same on
    both sides goes to the op (no copy); anything else is applied here."""
    pads = module._reversed_padding_repeated_twice  # (last dim left, right, previous dim ...)
    symmetric = module.padding_mode == "zeros" and all(
        pads[i] == pads[i + 1] for i in range(0, len(pads), 2)
    )
    if symmetric:
        return x, tuple(reversed(pads[::2]))
    return _pad(module, x), (0,) * len(module.kernel_size)


def _im2col(module: nn.modules.conv._ConvNd, x: Tensor) -> Tensor:
    """Patches of a 1-D or 2-D convolution through ``F.unfold`` (a 1-D one as [B, C, 1, L])."""
    x, padding = _padded(module, x)
    kernel, dilation, stride = module.kernel_size, module.dilation, module.stride
    if len(kernel) == 1:
        x = x.unsqueeze(2)
        kernel, dilation, stride = ((1, *v) for v in (kernel, dilation, stride))
        padding = (0, *padding)
    cols = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)  # (B, C*K, T)
    batch, features, positions = cols.shape
    groups = module.groups
    return cols.view(batch, groups, features // groups, positions).transpose(2, 3)


_WEIGHT_GRAD = (torch.nn.grad.conv1d_weight, torch.nn.grad.conv2d_weight, torch.nn.grad.conv3d_weight)


def per_sample_weight_grad(module: nn.modules.conv._ConvNd, x: Tensor, grad: Tensor) -> Tensor:
    """g_i(weight) for every sample at once, [B, *weight.shape]: the batch folded into the
    channels, B * G groups of one convolution's weight gradient (the grouped-convolution
    trick, Rochette et al. 2019), in float32 at least. No patches: on the CNN's second conv
    half the time of im2col plus the batched matmul."""
    dtype = torch.promote_types(torch.promote_types(x.dtype, grad.dtype), torch.float32)
    x, padding = _padded(module, x.to(dtype))
    batch, shape = x.shape[0], module.weight.shape
    out = _WEIGHT_GRAD[len(module.kernel_size) - 1](
        x.reshape(1, -1, *x.shape[2:]), (batch * shape[0], *shape[1:]),
        grad.to(dtype).reshape(1, -1, *grad.shape[2:]),
        stride=module.stride, padding=padding, dilation=module.dilation, groups=batch * module.groups,
    )
    return out.reshape(batch, *shape)


def _dense_route(module: nn.modules.conv._ConvNd, positions: int, route: str) -> bool:
    """The rule of ``stats.parameter_stats`` for one use: materialise when 2 T^2 >= P Q."""
    if route != "auto":
        return route == "materialize"
    return 2 * positions * positions >= module.weight.shape.numel()


def conv_kernel(
    module: nn.Module, inputs: KernelInputs, backprops: tuple[Tensor, ...]
) -> dict[str, Contribution]:
    """Weight gradient (dense where the route materialises, else factored per group) and
    dense bias gradient of a ConvNd call."""
    x = inputs.main_input()
    grad = backprops[0].movedim(inputs.batch_dim, 0)  # (B, C_out, *O)
    unbatched = x.dim() == len(module.kernel_size) + 1
    if unbatched:
        raise ValueError("unbatched convolution input has no batch dim")
    batch, out_channels = grad.shape[:2]
    positions = grad.shape[2:].numel()
    bias_grad = grad.reshape(batch, out_channels, positions).sum(2)
    weight: Contribution
    if _dense_route(module, positions, inputs.route):
        weight = Dense(per_sample_weight_grad(module, x, grad))
    else:
        groups = module.groups
        left = grad.reshape(batch, groups, out_channels // groups, -1).transpose(2, 3)
        # y: [B, C_out, *O] holds W patches + bias (broadcast over positions) for every group
        dot = output_dot(module, inputs, backprops, bias_grad)
        weight = Factored(left=left, right=unfold_patches(module, x), weight_dot=dot)
    return keep({"weight": weight, "bias": Dense(bias_grad)}, module)
