"""Which batch a module call belongs to, and which calls of one forward agree on it.

Each call's batch size is read at capture (the first tensor input at the batch dim;
EmbeddingBag: its number of bags). When the backward starts, the calls of the forward are
resolved together (``resolve``): a call whose input is shared by the whole batch (size 1
where others have more, or fewer dims than another call of the same module type, e.g.
nanoGPT's ``wpe(arange(T))`` next to ``wte(ids)``, when T != B) is skipped alone, since its output
gradient is already summed over samples. Any other disagreement (a multiple-instance model:
an encoder over 13 instances, a head over 5 bags) makes "per-sample" ambiguous, and the
step's per-sample values are dropped with the sizes named.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn
from torch.utils._pytree import tree_flatten


@dataclass(frozen=True)
class CallBatch:
    """The batch of one call: its size, the dims of its main input, its module type."""

    name: str
    size: int
    dims: int
    kind: type
    declares_layout: bool  # the module has a bool ``batch_first`` (RNNs, attention)


@dataclass(frozen=True)
class Resolution:
    """B, the calls skipped as broadcast (index -> reason), or why the step is dropped."""

    batch: int | None
    broadcast: dict[int, str]
    conflict: str | None = None  # a whole-step drop reason
    layout_hint: int | None = None  # index of a layout-declaring call that disagrees


def call_batch(name: str, module: nn.Module, args: tuple, kwargs: dict, batch_dim: int) -> CallBatch | None:
    """The call's batch, or None when its first tensor input has no batch dim."""
    if not kwargs and all(isinstance(a, Tensor) for a in args):  # the common call: no pytree walk
        tensors = list(args)
    else:
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, Tensor)]
    if not tensors:
        return None
    main = tensors[0]
    layout = isinstance(getattr(module, "batch_first", None), bool)
    if isinstance(module, nn.EmbeddingBag):
        offsets = tensors[1] if len(tensors) > 1 and main.dim() == 1 else None
        if main.dim() == 2:
            return CallBatch(name, main.shape[0], 2, type(module), layout)
        if offsets is None:
            return None
        bags = offsets.shape[0] - (1 if module.include_last_offset else 0)
        return CallBatch(name, bags, 2, type(module), layout)
    if main.dim() <= batch_dim:
        return None
    return CallBatch(name, main.shape[batch_dim], main.dim(), type(module), layout)


def resolve(calls: Sequence[CallBatch]) -> Resolution:
    """Decide B for the calls of one forward (see the module docstring)."""
    largest = max((c.size for c in calls), default=1)
    shapes: dict[type, set[tuple[int, int]]] = {}  # module type -> {(dims, size)}: small sets
    for call in calls:
        shapes.setdefault(call.kind, set()).add((call.dims, call.size))
    broadcast: dict[int, str] = {}
    for index, call in enumerate(calls):
        unbatched = any(d > call.dims and s != call.size for d, s in shapes[call.kind])
        if (call.size == 1 and largest > 1) or unbatched:
            broadcast[index] = (
                f"input has size {call.size} at the batch dim and is shared by the whole batch "
                "(e.g. position ids): the output gradient is already summed over samples"
            )
    sizes: dict[int, dict[str, None]] = {}  # size -> distinct names, in call order
    for index, call in enumerate(calls):
        if index not in broadcast:
            sizes.setdefault(call.size, {})[call.name] = None
    if len(sizes) <= 1:
        return Resolution(next(iter(sizes), None), broadcast)
    described = ", ".join(
        f"{size} ({', '.join(list(names)[:2])}{', ...' if len(names) > 2 else ''})"
        for size, names in sizes.items()
    )
    first = next(i for i, c in enumerate(calls) if i not in broadcast)
    hint = next((i for i, c in enumerate(calls) if c.declares_layout and c.size != calls[first].size
                 and i not in broadcast), None)
    return Resolution(
        None,
        broadcast,
        conflict=f"modules of one forward disagree on the batch size: {described}; per-sample values "
        "are ambiguous (per-instance values are not per-sample ones)",
        layout_hint=hint,
    )
