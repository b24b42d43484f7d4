"""Generic per-sample gradients with torch.func for any module with direct parameters.

For one call y = f(x; theta) of a module (theta = its direct trainable parameters, the
children's parameters held fixed), the per-sample gradient is the vector-Jacobian product

    g_i = (d f(x_i; theta) / d theta)^T b_i          b_i = the output gradient of sample i

computed as ``vmap(vjp(functional_call))`` over samples, each sample re-inserted with a
batch dim of 1 so the module sees the shapes it expects. Ops without a vmap rule (e.g.
nn.LSTM on CPU) fall back to a Python loop over samples with the same function. The
result is dense, [B, *parameter.shape]; memory grows as B x parameters, which is why the
dedicated kernels exist. The forward is replayed, so it must be deterministic: a module
with active dropout is declared not covered (``replay_problem``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap
from torch.nn.utils import parametrize
from torch.utils._pytree import tree_flatten, tree_flatten_with_path, tree_unflatten

from gradscope.record.kernels.base import Contribution, Dense, KernelInputs, trainable

PARAMETRIZED = (
    "parametrized weight (e.g. spectral_norm, weight_norm): reading it re-runs the parametrization, "
    "whose side effects (spectral_norm's power iteration) would change training"
)

# (module, argument position or keyword, leaf, batch_dim, B) -> the leaf's batch dim or None
InputDim = Callable[[nn.Module, "int | str", Tensor, int, int], "int | None"]
# (module, rank among hooked outputs, output gradient, batch_dim, B) -> its batch dim
OutputDim = Callable[[nn.Module, int, Tensor, int, int], "int | None"]


def default_input_dim(module: nn.Module, position: int | str, leaf: Tensor, bd: int, b: int):
    """A tensor is batched at ``bd`` when it has B there; others are shared by all samples."""
    if isinstance(module, nn.RNNBase) and position in (1, "hx"):
        bd = 1  # h0 / c0: [layers, B, H] whatever batch_first says
    return bd if leaf.dim() > bd and leaf.shape[bd] == b else None


def default_output_dim(module: nn.Module, rank: int, grad: Tensor, bd: int, b: int):
    """Outputs are batched at ``bd``; an RNN's final hidden states at dim 1."""
    if isinstance(module, nn.RNNBase) and rank > 0:
        bd = 1
    return bd if grad.dim() > bd and grad.shape[bd] == b else None


def replay_problem(module: nn.Module) -> str | None:
    """Why the module's forward cannot be replayed exactly (random ops, side effects), or None."""
    for sub in module.modules():
        if parametrize.is_parametrized(sub) or isinstance(sub, parametrize.ParametrizationList):
            return PARAMETRIZED
        if sub._forward_pre_hooks or sub._forward_hooks:
            return "the module has forward hooks of its own, which a replay would run again"
        if isinstance(sub, nn.modules.batchnorm._BatchNorm) and sub.training and sub.track_running_stats:
            return "a BatchNorm inside the module would update its running stats on a replay"
        if not sub.training:
            continue
        if isinstance(sub, nn.modules.dropout._DropoutNd) and sub.p > 0:
            return "dropout inside the module is random and cannot be replayed per sample"
        if isinstance(sub, nn.MultiheadAttention) and sub.dropout > 0:
            return "attention dropout is random and cannot be replayed per sample"
        if isinstance(sub, nn.RNNBase) and sub.dropout > 0 and sub.num_layers > 1:
            return "RNN inter-layer dropout is random and cannot be replayed per sample"
    return None


def parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    """Direct trainable parameters, plus MultiheadAttention's out_proj (never called)."""
    params = trainable(module)
    if isinstance(module, nn.MultiheadAttention):
        params.update({f"out_proj.{k}": p for k, p in trainable(module.out_proj).items()})
    return params


class FallbackKernel:
    """Per-sample gradients of a module's direct parameters by vmap of vjp (or a loop)."""

    def __init__(
        self,
        input_dim: InputDim = default_input_dim,
        output_dim: OutputDim = default_output_dim,
    ) -> None:
        self.input_dim = input_dim
        self.output_dim = output_dim
        # module types whose ops vmap could not batch -> why (they run a per-sample loop)
        self.loops: dict[type, str] = {}

    def __call__(
        self, module: nn.Module, inputs: KernelInputs, backprops: tuple[Tensor, ...]
    ) -> dict[str, Contribution]:
        """Dense per-sample gradients [B, *shape] of every direct trainable parameter."""
        bd, b = inputs.batch_dim, inputs.batch_size
        paths, spec = tree_flatten_with_path((inputs.args, inputs.kwargs))
        leaves = [leaf for _, leaf in paths]
        positions = [i for i, leaf in enumerate(leaves) if isinstance(leaf, Tensor)]
        in_dims = [
            self.input_dim(module, _position(paths[i][0]), leaves[i], bd, b)
            for i in positions
        ]
        out_dims = [self.output_dim(module, r, g, bd, b) for r, g in enumerate(backprops)]
        if any(d is None for d in out_dims):
            raise ValueError("an output has no batch dim of size B")
        params = {name: p.detach() for name, p in parameters(module).items()}

        def per_sample(theta: dict[str, Tensor], tensors: list, cotangents: list) -> dict:
            def forward(theta: dict[str, Tensor]) -> tuple[Tensor, ...]:
                new_leaves = list(leaves)
                for i, t, d in zip(positions, tensors, in_dims, strict=True):
                    new_leaves[i] = t if d is None else t.unsqueeze(d)
                args, kwargs = tree_unflatten(new_leaves, spec)
                flat = tree_flatten(functional_call(module, theta, args, kwargs))[0]
                outs = [flat[s] for s in inputs.output_slots]
                return tuple(o.squeeze(d) for o, d in zip(outs, out_dims, strict=True))

            _, pullback = vjp(forward, theta)
            return pullback(tuple(cotangents))[0]

        tensors = [leaves[i] for i in positions]
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="There is a performance drop")
            if type(module) not in self.loops:
                try:
                    grads = vmap(per_sample, in_dims=(None, in_dims, out_dims))(
                        params, tensors, list(backprops)
                    )
                    return {k: Dense(v) for k, v in grads.items()}
                except (RuntimeError, NotImplementedError, ValueError) as error:
                    first = (str(error).strip().splitlines() or [""])[0][:120]
                    self.loops[type(module)] = f"{type(error).__name__}: {first}"
            grads = _loop(per_sample, params, tensors, in_dims, list(backprops), out_dims, b)
        return {k: Dense(v) for k, v in grads.items()}


def _position(path: tuple[Any, ...]) -> int | str:
    """Argument index (positional) or keyword of a flattened leaf of (args, kwargs)."""
    key = path[1]
    return key.idx if hasattr(key, "idx") else key.key


def _loop(per_sample, params, tensors, in_dims, cotangents, out_dims, b) -> dict[str, Tensor]:
    """The vmap fallback: the same per-sample function, one sample at a time."""
    results = []
    for i in range(b):
        sample = [t if d is None else t.select(d, i) for t, d in zip(tensors, in_dims)]
        cot = [c.select(d, i) for c, d in zip(cotangents, out_dims)]
        results.append(per_sample(params, sample, cot))
    return {k: torch.stack([r[k] for r in results]) for k in results[0]}
