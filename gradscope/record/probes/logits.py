"""Output-logit probes: the health of the logits a cross-entropy consumes.

For each row z (one sample and position, classes last): log Z = logsumexp(z), the largest
logit, the gap between the two largest, and softmax collapse (Prieto et al. 2025,
"Grokking at the Edge of Numerical Stability"): the softmax, computed in the dtype the
loss computes in, is exactly one-hot (every other probability underflows to 0: in float32
a gap beyond ~103.3, where exp(-gap) is below the smallest subnormal). ``saturated`` is the
weaker state where the top probability already rounds to exactly 1 (gap beyond ~16.6 in
float32): the loss of a sample whose target is that class is exactly 0, and so is the
gradient's component along it.

Naive loss minimisation (Prieto et al. 2025): once the training set is fitted, the
gradient of the head points along its own weights, -g ~ W (scaling the logits up lowers
the loss): cos(-g, W) near 1. ``nlm_cos`` reads it from the head's .grad and weights at
the optimizer step (before the update), no extra computation.
"""

from __future__ import annotations

import torch
from torch import Tensor

BUDGET = 1 << 24  # logits per call: more rows than fit are subsampled evenly (docs/probes.md)
MAX_CHAIN = 8  # view / reshape nodes walked back from the loss input to a module output
VIEW_NODES = ("ViewBackward", "ReshapeAliasBackward", "UnsafeViewBackward", "SqueezeBackward",
              "UnsqueezeBackward", "CloneBackward", "ToCopyBackward", "SliceBackward", "SelectBackward",
              "PermuteBackward", "TransposeBackward", "TBackward", "ExpandBackward")
RESHAPE_NODES = ("ViewBackward", "ReshapeAliasBackward", "UnsafeViewBackward", "SqueezeBackward",
                 "UnsqueezeBackward")


def rows_of(logits: Tensor, target: Tensor | None = None, ignore_index: int = -100) -> Tensor:
    """The cross-entropy input as [N, C] rows (classes at dim 1 of an input with 2+ dims),
    dropping rows whose class-index target is ``ignore_index``."""
    z = logits.detach()
    if z.dim() == 1:
        z = z[None]
    elif z.dim() > 2:
        z = z.movedim(1, -1)
    z = z.reshape(-1, z.shape[-1])
    if target is not None and not target.is_floating_point() and target.numel() == z.shape[0]:
        z = z[target.detach().reshape(-1) != ignore_index]
    if z.numel() > BUDGET:  # a large vocabulary times many tokens: evenly spaced rows
        count = max(1, BUDGET // z.shape[1])
        z = z[torch.linspace(0, z.shape[0] - 1, count, device=z.device).round().long()]
    return z


def logit_stats(z: Tensor, dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """Sums and extremes over rows of z [N, C] (float32 0-dim tensors): log_z_sum,
    log_z_max, max_logit, gap_sum, gap_min, collapsed and saturated (row counts), rows.
    ``dtype``: the dtype the softmax is computed in (default z's own)."""
    with torch.no_grad():
        wide = z.float()
        log_z = torch.logsumexp(wide, dim=-1)
        top = wide.topk(min(2, wide.shape[-1]), dim=-1).values
        gap = top[:, 0] - top[:, 1] if top.shape[-1] > 1 else torch.full_like(log_z, float("inf"))
        probs = torch.softmax(z.to(dtype or z.dtype), dim=-1)
        top_p = probs.amax(-1)
        one_hot = (top_p == 1) & ((probs > 0).sum(-1) == 1)
        return {
            "log_z_sum": log_z.sum(), "log_z_max": log_z.amax(), "max_logit": wide.amax(),
            "gap_sum": gap.sum(), "gap_min": gap.amin(), "collapsed": one_hot.sum().float(),
            "saturated": (top_p == 1).sum().float(), "rows": torch.tensor(float(z.shape[0])),
        }


def view_chain(tensor: Tensor) -> list[tuple[object, bool]]:
    """(grad_fn, reached by reshapes only) for ``tensor`` and the nodes it views, nearest first."""
    chain, node, reshape_only = [], tensor.grad_fn, True
    for _ in range(MAX_CHAIN):
        if node is None:
            break
        chain.append((node, reshape_only))
        name = type(node).__name__
        if not name.startswith(VIEW_NODES):
            break
        reshape_only = reshape_only and name.startswith(RESHAPE_NODES)
        parents = [n for n, _ in node.next_functions if n is not None]
        node = parents[0] if len(parents) == 1 else None
    return chain


def nlm_cos(weight: Tensor) -> Tensor | None:
    """cos(-g, W) of one parameter from its .grad (None without a gradient)."""
    grad = weight.grad
    if grad is None or grad.shape != weight.shape:
        return None
    with torch.no_grad():
        g, w = grad.detach().double().reshape(-1), weight.detach().double().reshape(-1)
        return -(g @ w) / (g.norm() * w.norm()).clamp(min=1e-300)
