"""Per-sample gradients of attention projections.

``nn.MultiheadAttention`` owns in_proj_weight [3E, E] / in_proj_bias [3E] (or the separate
q/k/v_proj_weight when kdim/vdim differ, and bias_k/bias_v) directly, and its out_proj as a
child Linear, which the Linear kernel covers. The direct parameters sit before the softmax,
so their output gradients are not visible to hooks: they go through the torch.func fallback
restricted to the direct parameters, with MultiheadAttention's batch conventions
(key_padding_mask [B, S] and the attention weights [B, T, S] are batch-first whatever
``batch_first`` says; a 2-D attn_mask is shared by all samples; a 3-D one is [B*heads, T, S]
and not supported).

GPT-2 style ``Conv1D`` (Hugging Face): y = x W + b with W: [nx, nf], i.e. a Linear stored
transposed, so G_i = sum_t a_it^T b_it is factored with L = a: [B, 1, T, nx] and
R = b: [B, 1, T, nf]; bias g_i = sum_t b_it.
"""

from __future__ import annotations

from torch import Tensor, nn

from gradscope.record.kernels.base import (
    Contribution,
    Dense,
    Factored,
    KernelInputs,
    flatten_positions,
    keep,
    output_dot,
    output_grad,
)
from gradscope.record.kernels.fallback import FallbackKernel


def mha_input_dim(module: nn.Module, position: int | str, leaf: Tensor, bd: int, b: int):
    """Batch dim of a MultiheadAttention argument (see the module docstring)."""
    if position in (3, "key_padding_mask"):
        return 0
    if position in (5, "attn_mask"):
        if leaf.dim() == 3:
            raise ValueError("a 3-D attn_mask ([B*heads, T, S]) cannot be split per sample")
        return None
    return bd if leaf.dim() > bd and leaf.shape[bd] == b else None


def mha_output_dim(module: nn.Module, rank: int, grad: Tensor, bd: int, b: int):
    """Attention output at ``bd``; averaged or per-head attention weights at dim 0."""
    return bd if rank == 0 else 0


def multihead_attention_kernel() -> FallbackKernel:
    """A fallback kernel instance with MultiheadAttention's batch conventions."""
    return FallbackKernel(input_dim=mha_input_dim, output_dim=mha_output_dim)


def is_gpt2_conv1d(module: nn.Module) -> bool:
    """Hugging Face's Conv1D, detected by class name and shapes (no transformers import)."""
    weight = module._parameters.get("weight")  # never a parametrized attribute (side effects)
    return (
        type(module).__name__ == "Conv1D"
        and isinstance(weight, Tensor)
        and weight.dim() == 2
        and getattr(module, "nf", weight.shape[1]) == weight.shape[1]
    )


def gpt2_conv1d_kernel(
    module: nn.Module, inputs: KernelInputs, backprops: tuple[Tensor, ...]
) -> dict[str, Contribution]:
    """Factored weight gradient (transposed orientation) and dense bias of a Conv1D call."""
    activations = flatten_positions(inputs.main_input())  # (B, 1, T, nx)
    grads = flatten_positions(output_grad(inputs, backprops))  # (B, 1, T, nf)
    bias_grad = grads.sum((1, 2))  # (B, nf)
    dot = output_dot(module, inputs, backprops, bias_grad)  # sum_t b_it . (y_it - bias)
    result: dict[str, Contribution] = {
        "weight": Factored(left=activations, right=grads, weight_dot=dot),
        "bias": Dense(bias_grad),
    }
    return keep(result, module)
