"""Per-parameter statistics from per-sample gradient contributions (DESIGN.md section 4).

For one parameter W ([P, Q] view) used several times in a forward, each use gives
G_i^u = L_i^u^T R_i^u; the per-sample gradient is the sum over uses, which in factored form
is the concatenation of the uses along the token axis T. With that L_i: [T, P], R_i: [T, Q]:

    ||G_i||^2    = sum_{t,s} (L_it . L_is)(R_it . R_is)          ghost norm, [B]
    <G_i, G_j>   = sum_{t,s} (L_it . L_js)(R_it . R_js)          Gram, [B, B]
    <G_i, W>     = sum_t L_it . (W R_it)                          weight alignment, [B]
                 = sum_t b_it . (y_it - bias)     per use, from the layer output if kept
    S_i          = (P_out L_i^T)(R_i P_in^T)                       sketch, [k, k]

Row-id factors (Embedding) are never expanded: L_it . L_is = [id_t == id_s] and
L_it . X_s = X_s[id_t]. Route (the GhostSuite / book-keeping rule): ghost when
2 T^2 < P Q, else materialise G_i ([B, P, Q]) and take dense norms; ``route`` forces one.
Results are in the hook convention (no 1/B rescaling here) and in ``dtype``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gradscope.record.kernels.base import Contribution, Dense, Factored


@dataclass
class ParamStats:
    """Statistics of one parameter's per-sample gradients: [B], [B], [B, k*k], [B, B]."""

    norm2: Tensor
    weight_dot: Tensor
    sketch: Tensor | None
    gram: Tensor | None
    route: str
    weight_dot_route: str = "dense"  # "output" | "einsum" | "mixed" (factored), or "dense"


def parameter_stats(
    weight: Tensor,
    contributions: list[Contribution],
    projection: tuple[Tensor, ...] | None,
    want_gram: bool,
    route: str,
) -> ParamStats:
    """Combine the uses of one parameter and compute its per-sample statistics."""
    dtype = projection[0].dtype if projection else _compute_dtype(weight)
    weight = weight.detach().to(dtype)
    factored = [c for c in contributions if isinstance(c, Factored)]
    dense = [c.grad.to(dtype) for c in contributions if isinstance(c, Dense)]
    if factored and (dense or _choose_route(weight, factored, route) == "materialize"):
        dense += [materialize(c, weight.shape).to(dtype) for c in factored]
        factored = []
    if factored:
        weight_dot, dot_route = _weight_dot(weight, factored, dtype)
        kinds = _concatenate(factored, dtype)
        stats = _factored_stats(weight, kinds, projection, want_gram, weight_dot)
        stats.weight_dot_route = dot_route
        return stats
    return _dense_stats(weight, torch.stack(dense).sum(0), projection, want_gram)


def _compute_dtype(weight: Tensor) -> torch.dtype:
    return torch.promote_types(weight.dtype, torch.float32)


def _choose_route(weight: Tensor, factored: list[Factored], route: str) -> str:
    """Ghost when 2 T^2 < P Q (T summed over uses), unless forced; mixed groups materialise."""
    groups = {c.groups for c in factored if not c.is_index}
    if len(groups) > 1 or (groups - {1} and any(c.is_index for c in factored)):
        return "materialize"
    if route != "auto":
        return route
    tokens = sum(c.right.shape[2] for c in factored)
    return "ghost" if 2 * tokens * tokens < weight.numel() else "materialize"


def materialize(c: Factored, shape: torch.Size) -> Tensor:
    """G_i built densely from its factors: [B, *shape]."""
    batch, groups, tokens, q = c.right.shape
    if c.is_index:
        ids, valid = _ids(c.left)
        out = c.right.new_zeros(batch, shape[0], q)
        src = c.right[:, 0] * valid[:, 0, :, None]
        out.scatter_add_(1, ids[:, 0, :, None].expand(batch, tokens, q), src)
        return out.reshape(batch, *shape)
    blocks = torch.einsum("bgtp,bgtq->bgpq", c.left, c.right)  # (B, G, P/G, Q)
    return blocks.reshape(batch, *shape)


def _ids(left: Tensor) -> tuple[Tensor, Tensor]:
    """Row ids clamped to be valid indices, and the mask of positions that count."""
    valid = left >= 0
    return left.clamp(min=0), valid


def _concatenate(factored: list[Factored], dtype: torch.dtype) -> list[Factored]:
    """Concatenate uses along T, one Factored per kind (dense left, row-id left).

    A kind with a single use (the common case) is returned as is, converted to ``dtype``
    only where it differs: no copy of the factors.
    """
    kinds = []
    for is_index in (False, True):
        same = [c for c in factored if c.is_index == is_index]
        if len(same) == 1:
            c = same[0]
            kinds.append(Factored(c.left if is_index else c.left.to(dtype), c.right.to(dtype)))
        elif same:
            left = torch.cat([c.left if is_index else c.left.to(dtype) for c in same], dim=2)
            right = torch.cat([c.right.to(dtype) for c in same], dim=2)
            kinds.append(Factored(left, right))
    return kinds


def _left_gram(a: Factored, b: Factored, cross: bool) -> Tensor:
    """L_a . L_b over token pairs: [B, G, Ta, Tb], or [B, B, G, Ta, Tb] across samples."""
    if not a.is_index and not b.is_index:
        return torch.einsum("igtp,jgsp->ijgts" if cross else "bgtp,bgsp->bgts", a.left, b.left)
    if a.is_index and b.is_index:
        ids_a, valid_a = _ids(a.left)
        ids_b = b.left
        if cross:
            same = ids_a[:, None, :, :, None] == ids_b[None, :, :, None, :]
            return (same & valid_a[:, None, :, :, None]).to(a.right.dtype)
        same = ids_a[:, :, :, None] == ids_b[:, :, None, :]
        return (same & valid_a[:, :, :, None]).to(a.right.dtype)
    if not a.is_index:
        return _left_gram(b, a, cross).transpose(-1, -2).transpose(0, 1 if cross else 0)
    return _index_dense_gram(a.left, b.left, cross)


def _index_dense_gram(ids: Tensor, dense: Tensor, cross: bool) -> Tensor:
    """One-hot(ids_t) . X_s = X_s[id_t] for ids [B, 1, T], X [B, 1, S, P]."""
    index, valid = _ids(ids)
    batch, tokens = index.shape[0], index.shape[2]
    if cross:
        rows = dense[:, 0][:, :, index.reshape(-1)]  # (Bj, S, Bi*T)
        rows = rows.reshape(batch, dense.shape[2], batch, tokens).permute(2, 0, 3, 1)
        return rows.unsqueeze(2) * valid[:, None, :, :, None]  # (Bi, Bj, 1, T, S)
    gathered = torch.gather(
        dense, 3, index[:, :, None, :].expand(batch, 1, dense.shape[2], tokens)
    )  # (B, 1, S, T)
    return gathered.transpose(-1, -2) * valid[..., None]


def _right_gram(a: Factored, b: Factored, cross: bool) -> Tensor:
    return torch.einsum("igtq,jgsq->ijgts" if cross else "bgtq,bgsq->bgts", a.right, b.right)


def _weight_dot(weight: Tensor, factored: list[Factored], dtype: torch.dtype) -> tuple[Tensor, str]:
    """<G_i, W> summed over the uses (it is linear in G_i), and how it was computed.

    A use whose layer output was kept (``Factored.weight_dot``) reads it from the output:
    sum_t b_it . (y_it - bias), no matmul. The others (output modified in place, not a plain
    tensor, Embedding's row ids) take sum_t L_it . (W R_it) from their own factors.
    """
    weight2d = weight.reshape(weight.shape[0], -1)
    total, used = None, set()
    for c in factored:
        if c.weight_dot is not None:
            value = c.weight_dot.value(dtype)
            used.add("output")
        else:
            left = c.left if c.is_index else c.left.to(dtype)
            value = _factored_weight_dot(weight2d, Factored(left, c.right.to(dtype)))
            if not c.is_index:
                used.add("einsum")
        total = value if total is None else total + value
    route = "mixed" if len(used) == 2 else used.pop() if used else "einsum"
    return total, route


def _factored_stats(
    weight: Tensor,
    kinds: list[Factored],
    projection: tuple[Tensor, ...] | None,
    want_gram: bool,
    weight_dot: Tensor | None = None,
) -> ParamStats:
    norm2 = sum(
        (_left_gram(a, b, False) * _right_gram(a, b, False)).sum((1, 2, 3))
        for a in kinds
        for b in kinds
    )
    gram = None
    if want_gram:
        gram = sum(
            (_left_gram(a, b, True) * _right_gram(a, b, True)).sum((2, 3, 4))
            for a in kinds
            for b in kinds
        )
    if weight_dot is None:
        weight2d = weight.reshape(weight.shape[0], -1)
        weight_dot = sum(_factored_weight_dot(weight2d, c) for c in kinds)
    sketch = None
    if projection is not None:
        sketch = sum(_factored_sketch(c, *projection) for c in kinds)
    return ParamStats(norm2, weight_dot, sketch, gram, "ghost")


def _factored_weight_dot(weight2d: Tensor, c: Factored) -> Tensor:
    """sum_t L_it . (W R_it) per group: [B]."""
    if c.is_index:
        ids, valid = _ids(c.left)
        rows = weight2d[ids]  # (B, 1, T, Q): L_it W, i.e. the embedding output
        return ((rows * c.right).sum(-1) * valid).sum((1, 2))
    groups = c.groups
    w3 = weight2d.reshape(groups, -1, weight2d.shape[1])  # (G, P/G, Q)
    projected = torch.einsum("gpq,bgtq->bgtp", w3, c.right)
    return (projected * c.left).sum((1, 2, 3))


def _factored_sketch(c: Factored, p_out: Tensor, p_in: Tensor) -> Tensor:
    """(P_out L_i^T)(R_i P_in^T) summed over groups and tokens: [B, k*k].

    Each projection multiplies the factor's transpose (p @ X^T, [B, G, k, T]): X often
    arrives transposed (the logits gradient of a [B, C, T] loss, conv patches), so X^T is
    the contiguous one; einsum copied such an X first (7x slower on the GPT's head).
    """
    right = torch.matmul(p_in, c.right.transpose(-1, -2))  # (B, G, l, T)
    if c.is_index:
        ids, valid = _ids(c.left)
        left = (p_out.t()[ids] * valid[..., None]).transpose(-1, -2)  # (B, 1, k, T)
    else:
        p_blocks = p_out.reshape(p_out.shape[0], c.groups, -1).transpose(0, 1)  # (G, k, P/G)
        left = torch.matmul(p_blocks, c.left.transpose(-1, -2))  # (B, G, k, T)
    return torch.matmul(left, right.transpose(-1, -2)).sum(1).flatten(1)  # (B, k*l)


def _dense_stats(
    weight: Tensor, grad: Tensor, projection: tuple[Tensor, ...] | None, want_gram: bool
) -> ParamStats:
    """Statistics of a materialised per-sample gradient [B, *shape]."""
    flat = grad.reshape(grad.shape[0], -1)  # a 0-d parameter (CLIP logit_scale): [B] -> [B, 1]
    norm2 = (flat * flat).sum(1)
    weight_dot = flat @ weight.reshape(-1)
    gram = flat @ flat.t() if want_gram else None
    sketch = None
    if projection is not None and len(projection) == 2:
        g3 = grad.reshape(grad.shape[0], projection[0].shape[1], projection[1].shape[1])
        sketch = torch.einsum("kp,bpq,lq->bkl", projection[0], g3, projection[1]).flatten(1)
    elif projection is not None:
        sketch = flat @ projection[0].t()
    return ParamStats(norm2, weight_dot, sketch, gram, "materialize")


def task_dots(
    weight: Tensor, per_task: list[list[Contribution]], batch: int, route: str
) -> Tensor:
    """Per-sample cross-task dots of one parameter: D[i, a, b] = <G_i^a, G_i^b>, [B, K, K].

    ``per_task[k]`` holds the contributions of every use of the parameter computed from
    task k's output gradients (empty: task k gives the parameter no gradient, so its row and
    column are 0). Factored uses: D[i, a, b] = sum_{t,s} (L^a_it . L^b_is)(R^a_it . R^b_is)
    over the uses concatenated along T, the same sums as the ghost norm with the two tasks'
    factors; mixed or large-T parameters are materialised (same rule as
    ``parameter_stats``) and D = G^a_i . G^b_i. Results in the hook convention, ``dtype``
    promoted to float32 at least.
    """
    dtype = _compute_dtype(weight)
    tasks = len(per_task)
    out = weight.new_zeros(batch, tasks, tasks, dtype=dtype)
    present = [k for k in range(tasks) if per_task[k]]
    if not present:
        return out
    factored = [c for k in present for c in per_task[k] if isinstance(c, Factored)]
    dense = any(isinstance(c, Dense) for k in present for c in per_task[k])
    first = [c for c in per_task[present[0]] if isinstance(c, Factored)]
    if factored and not dense and _choose_route(weight, first, route) == "ghost":
        kinds = {k: _concatenate(per_task[k], dtype) for k in present}  # type: ignore[arg-type]
        pair = _factored_pair_dot
    else:
        kinds = {k: _dense_sum(per_task[k], weight.shape, dtype) for k in present}
        pair = _dense_pair_dot
    for index, a in enumerate(present):
        for b in present[index:]:
            value = pair(kinds[a], kinds[b])
            out[:, a, b] = value
            out[:, b, a] = value
    return out


def _dense_sum(contributions: list[Contribution], shape: torch.Size, dtype: torch.dtype) -> Tensor:
    """The per-sample gradient of one task as [B, numel] (factored uses materialised)."""
    parts = [
        (c.grad if isinstance(c, Dense) else materialize(c, shape)).to(dtype)
        for c in contributions
    ]
    parts = [part.reshape(part.shape[0], -1) for part in parts]  # a 0-d parameter: [B] -> [B, 1]
    return torch.stack(parts).sum(0)


def _dense_pair_dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(1)


def _factored_pair_dot(a: list[Factored], b: list[Factored]) -> Tensor:
    """sum_{t,s} (L^a_it . L^b_is)(R^a_it . R^b_is) over every pair of kinds: [B]."""
    return sum(
        (_left_gram(x, y, False) * _right_gram(x, y, False)).sum((1, 2, 3)) for x in a for y in b
    )
