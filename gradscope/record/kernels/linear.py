"""Per-sample gradients of ``nn.Linear``: y = a W^T + b, W: [d_out, d_in].

For sample i with inputs a_it ([T, d_in], T = every non-batch position flattened, so
[B, d], [B, T, d] and [B, H, T, d] inputs all work) and output gradients b_it ([T, d_out]):

    G_i(weight) = sum_t b_it a_it^T     factored, L = b: [B, 1, T, d_out], R = a: [B, 1, T, d_in]
    g_i(bias)   = sum_t b_it            dense, [B, d_out]

<G_i, W> is read from the output when the engine kept it: sum_t b_it . (y_it - bias).
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


def linear_kernel(
    module: nn.Module, inputs: KernelInputs, backprops: tuple[Tensor, ...]
) -> dict[str, Contribution]:
    """Factored weight gradient and dense bias gradient of one call of a Linear layer."""
    activations = flatten_positions(inputs.main_input())  # (B, 1, T, d_in)
    grads = flatten_positions(output_grad(inputs, backprops))  # (B, 1, T, d_out)
    bias_grad = grads.sum((1, 2))  # (B, d_out)
    dot = output_dot(module, inputs, backprops, bias_grad)
    result: dict[str, Contribution] = {
        "weight": Factored(left=grads, right=activations, weight_dot=dot),
        "bias": Dense(bias_grad),
    }
    return keep(result, module)
