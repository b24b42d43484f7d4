"""The explicit registry of per-sample kernels: module type -> (method, kernel).

One kernel per layer family (Opacus style), looked up by exact type so that a subclass
with its own forward never gets a kernel that assumes the parent's forward; such modules,
and every other module with direct parameters, go to the torch.func fallback.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

from gradscope.record.kernels.attention import (
    gpt2_conv1d_kernel,
    is_gpt2_conv1d,
    multihead_attention_kernel,
)
from gradscope.record.kernels.bag import embedding_bag_kernel
from gradscope.record.kernels.base import Kernel, trainable
from gradscope.record.kernels.conv import conv_kernel
from gradscope.record.kernels.embedding import embedding_kernel
from gradscope.record.kernels.fallback import FallbackKernel
from gradscope.record.kernels.linear import linear_kernel
from gradscope.record.kernels.norm import group_norm_kernel, layer_norm_kernel, rms_norm_kernel

FACTORED = "factored"  # ghost or materialise, chosen per layer and step by the cost model
NORM_AFFINE = "norm-affine"
FALLBACK = "fallback"

# Kernels whose <G_i, W> can be read from the layer's output (y = W a + bias): the engine
# keeps a detached reference to the output of their calls (KernelInputs.output).
READS_OUTPUT: frozenset[Kernel] = frozenset({linear_kernel, conv_kernel, gpt2_conv1d_kernel})


@dataclass
class KernelRegistry:
    """Module type -> (method, kernel); one instance per engine (the fallback caches)."""

    fallback: FallbackKernel = field(default_factory=FallbackKernel)
    table: dict[type[nn.Module], tuple[str, Kernel]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.table:
            self.table = default_table()

    def lookup(self, module: nn.Module) -> tuple[str, Kernel]:
        """The method family and kernel for a module; the fallback when none is registered."""
        entry = self.table.get(type(module))
        if entry is not None:
            return entry
        if is_gpt2_conv1d(module):
            return FACTORED, gpt2_conv1d_kernel
        return FALLBACK, self.fallback

    def parameters(self, module: nn.Module) -> dict[str, nn.Parameter]:
        """The trainable parameters a call of ``module`` gives gradients to, by dotted name.

        The direct ones, plus MultiheadAttention's ``out_proj.weight`` / ``out_proj.bias``:
        MultiheadAttention uses its out_proj child through F.linear inside its own forward,
        so that child never runs and no hook would otherwise see its parameters.
        """
        params = trainable(module)
        if isinstance(module, nn.MultiheadAttention):
            for name, param in trainable(module.out_proj).items():
                params[f"out_proj.{name}"] = param
        return params


def default_table() -> dict[type[nn.Module], tuple[str, Kernel]]:
    """The built-in families."""
    return {
        nn.Linear: (FACTORED, linear_kernel),
        NonDynamicallyQuantizableLinear: (FACTORED, linear_kernel),  # MHA's out_proj
        nn.Conv1d: (FACTORED, conv_kernel),
        nn.Conv2d: (FACTORED, conv_kernel),
        nn.Conv3d: (FACTORED, conv_kernel),
        nn.Embedding: (FACTORED, embedding_kernel),
        nn.EmbeddingBag: (FACTORED, embedding_bag_kernel),
        nn.LayerNorm: (NORM_AFFINE, layer_norm_kernel),
        nn.RMSNorm: (NORM_AFFINE, rms_norm_kernel),
        nn.GroupNorm: (NORM_AFFINE, group_norm_kernel),
        nn.MultiheadAttention: (FALLBACK, multihead_attention_kernel()),
    }


__all__ = [
    "FACTORED",
    "FALLBACK",
    "NORM_AFFINE",
    "READS_OUTPUT",
    "KernelRegistry",
    "default_table",
]
