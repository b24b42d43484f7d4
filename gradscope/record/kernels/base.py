"""Shared types of the per-sample kernels: what a kernel receives and what it returns.

Letters used throughout (DESIGN.md section 4): B samples, T non-batch positions flattened,
G groups (grouped conv; 1 elsewhere), P and Q the two dims of a parameter in its storage
orientation (a parameter with more than two dims is viewed as [shape[0], -1]).

A kernel is one function per layer family, Opacus style::

    kernel(module, inputs: KernelInputs, backprops: tuple[Tensor, ...]) -> dict[str, Contribution]

It maps each direct parameter name of the module ("weight", "bias", ...) to that use's
per-sample gradient, either factored (``Factored``) or dense (``Dense``). Backprops are the
gradients of the batch loss with respect to the module's outputs that require grad, in the
order of ``inputs.output_slots``; a slot whose hook never fired holds zeros.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn


@dataclass
class KernelInputs:
    """What ``capture`` saved for one call of a module (tensors detached)."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    batch_dim: int  # where the batch lies in the module's main input
    batch_size: int  # B
    output_slots: tuple[int, ...]  # indices of the hooked tensors among the flattened outputs
    # The module's output (detached reference, not a copy), kept only for the families whose
    # <G_i, W> can be read from it (Linear, Conv, GPT-2 Conv1D), with the versions of the
    # output and of the module's weight/bias at capture: a change means an in-place edit.
    output: Tensor | None = None
    versions: tuple[tuple[Tensor, int], ...] = ()
    # the engine's route setting ("auto" | "ghost" | "materialize"): a kernel with a cheaper
    # dense form than materialising its factors (conv) returns it when the route says dense
    route: str = "auto"

    def main_input(self) -> Tensor:
        """The first tensor argument with its batch dim moved to 0: [B, ...]."""
        return self.args[0].movedim(self.batch_dim, 0)


@dataclass(frozen=True)
class OutputDot:
    """<G_i, W> of one use read from the layer's output: y_it = W a_it + bias, so

        <G_i, W> = sum_t b_it . (y_it - bias) = sum_t b_it . y_it - (sum_t b_it) . bias

    an elementwise product instead of a second forward matmul. ``grad`` and ``output``:
    [B, ...] of the same shape; ``bias_grad``: sum_t b_it, [B, C] (None without a bias).
    """

    grad: Tensor
    output: Tensor
    bias_grad: Tensor | None = None
    bias: Tensor | None = None

    def value(self, dtype: torch.dtype) -> Tensor:
        """[B] in ``dtype``."""
        batch = self.grad.shape[0]
        grad = self.grad.reshape(batch, -1).to(dtype)
        # one fused multiply-reduce: einsum("bn,bn->b") runs as B vector bmm's, 3x slower on CPU
        dot = torch.linalg.vecdot(grad, self.output.reshape(batch, -1).to(dtype))
        if self.bias is not None and self.bias_grad is not None:
            dot = dot - self.bias_grad.to(dtype) @ self.bias.detach().to(dtype)
        return dot


@dataclass(frozen=True)
class Factored:
    """One use's per-sample gradient in factored form, G_i = sum_t L_it^T R_it per group.

    ``left``: [B, G, T, P/G] floats, or [B, 1, T] int64 row ids (a one-hot L that is never
    built; -1 marks positions that give no gradient, e.g. Embedding's padding_idx).
    ``right``: [B, G, T, Q]. Group g owns the rows g*P/G ... (g+1)*P/G - 1 of the parameter.
    """

    left: Tensor
    right: Tensor
    # <G_i, W> from the layer's output (``output_dot``); None: computed from the factors
    weight_dot: OutputDot | None = field(default=None, compare=False)

    @property
    def is_index(self) -> bool:
        """Whether ``left`` holds row ids rather than a dense factor."""
        return not self.left.is_floating_point()

    @property
    def groups(self) -> int:
        """G, the number of row blocks."""
        return self.right.shape[1]


@dataclass(frozen=True)
class Dense:
    """One use's per-sample gradient materialised: [B, *parameter.shape]."""

    grad: Tensor


Contribution = Factored | Dense


class Kernel(Protocol):
    """The signature shared by every per-layer kernel."""

    def __call__(
        self, module: nn.Module, inputs: KernelInputs, backprops: tuple[Tensor, ...]
    ) -> dict[str, Contribution]: ...


def output_grad(inputs: KernelInputs, backprops: tuple[Tensor, ...]) -> Tensor:
    """The gradient of the module's first output with its batch dim moved to 0: [B, ...]."""
    return backprops[0].movedim(inputs.batch_dim, 0)


def output_dot(
    module: nn.Module, inputs: KernelInputs, backprops: tuple[Tensor, ...], bias_grad: Tensor
) -> OutputDot | None:
    """``OutputDot`` of one call when its saved output is still what the layer computed.

    None (the caller computes <G_i, W> from the factors) when no output was kept, when the
    output or the weight/bias was modified in place since the capture (``_version``, e.g.
    ``ReLU(inplace=True)`` right after the layer), or when the output does not have the
    shape of the output gradient.
    """
    y = inputs.output
    if y is None or len(backprops) != 1 or y.shape != backprops[0].shape:
        return None
    if any(t._version != version for t, version in inputs.versions):
        return None
    bias = module._parameters.get("bias")  # never a parametrized attribute
    return OutputDot(
        grad=backprops[0].movedim(inputs.batch_dim, 0),
        output=y.movedim(inputs.batch_dim, 0),
        bias_grad=bias_grad if bias is not None else None,
        bias=bias,
    )


def flatten_positions(x: Tensor) -> Tensor:
    """[B, ..., D] -> [B, 1, T, D]: every non-batch position becomes a token, G = 1."""
    return x.reshape(x.shape[0], 1, -1, x.shape[-1])


def trainable(module: nn.Module) -> dict[str, nn.Parameter]:
    """The module's direct parameters that require grad, by attribute name."""
    return {
        name: p
        for name, p in module._parameters.items()
        if p is not None and p.requires_grad
    }


def keep(contributions: dict[str, Contribution], module: nn.Module) -> dict[str, Contribution]:
    """Drop contributions for parameters that are frozen or absent (e.g. bias=False)."""
    names = trainable(module)
    return {k: v for k, v in contributions.items() if k in names}


__all__ = [
    "Contribution",
    "Dense",
    "Factored",
    "Kernel",
    "KernelInputs",
    "OutputDot",
    "flatten_positions",
    "keep",
    "output_dot",
    "output_grad",
    "trainable",
]
