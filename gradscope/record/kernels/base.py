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

from dataclasses import dataclass
from typing import Any, Protocol

from torch import Tensor, nn


@dataclass
class KernelInputs:
    """What ``capture`` saved for one call of a module (tensors detached)."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    batch_dim: int  # where the batch lies in the module's main input
    batch_size: int  # B
    output_slots: tuple[int, ...]  # indices of the hooked tensors among the flattened outputs

    def main_input(self) -> Tensor:
        """The first tensor argument with its batch dim moved to 0: [B, ...]."""
        return self.args[0].movedim(self.batch_dim, 0)


@dataclass(frozen=True)
class Factored:
    """One use's per-sample gradient in factored form, G_i = sum_t L_it^T R_it per group.

    ``left``: [B, G, T, P/G] floats, or [B, 1, T] int64 row ids (a one-hot L that is never
    built; -1 marks positions that give no gradient, e.g. Embedding's padding_idx).
    ``right``: [B, G, T, Q]. Group g owns the rows g*P/G ... (g+1)*P/G - 1 of the parameter.
    """

    left: Tensor
    right: Tensor

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
    "flatten_positions",
    "keep",
    "output_grad",
    "trainable",
]
