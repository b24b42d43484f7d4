"""What a conformance script knows about itself, written as JSON when GS_REFERENCE is set.

The naive per-sample reference (issue 10): for sample j of one backward, c_j is the
gradient, with respect to the layer's parameters, of the script's own batch loss applied to
a batch output in which only sample j's output is attached to the graph (the model run on
each sample alone; the other samples' outputs detached). It is computed on a deep copy of
the model, with torch's RNG state saved and restored, and only when GS_REFERENCE is set:
the test takes it from the plain run, so the recorded run computes nothing extra.

Self-checks written next to it: ``copy_loss`` (the copy's batch loss with every sample
attached, which must equal the loss the script backpropagated: the copy reproduces the
training forward) and ``residual`` (max |sum_j c_j - batch gradient| / max |batch gradient|
on that copy: the samples' terms add up to the batch gradient when the loss is separable).
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

PATH = os.environ.get("GS_REFERENCE")
ACTIVE = bool(PATH)
LossOf = Callable[..., Tensor]  # (model copy, j or None for all, *args) -> the batch loss
Clone = Callable[[nn.Module], nn.Module]

_PARAMETRIZED = re.compile(r"(^|\.)parametrizations\.[^.]+\.original\d*$")


def layer_of(param_name: str) -> str:
    """The layer a parameter belongs to, as the user's model names it: the module holding it,
    or for a parametrized weight (``0.parametrizations.weight.original``) the module ``0``."""
    stripped = _PARAMETRIZED.sub("", param_name)
    if stripped != param_name:
        return stripped
    return param_name.rpartition(".")[0]


def split(*tensors: Tensor) -> list[tuple[Tensor, ...]]:
    """Per-sample argument tuples: sample k gets ``t[k:k+1]`` of each tensor."""
    return [tuple(t[k : k + 1] for t in tensors) for k in range(len(tensors[0]))]


def spliced(forward: Callable[..., Tensor], samples: Sequence[tuple], j: int | None) -> Tensor:
    """The batch output of ``forward`` run on each sample alone (``samples``: one argument
    tuple per sample), with only sample j attached to the graph (all when j is None)."""
    rows = []
    for k, args in enumerate(samples):
        if j is None or k == j:
            rows.append(forward(*args))
        else:
            with torch.no_grad():
                rows.append(forward(*args))
    return torch.cat(rows)


def per_sample(loss_fn: Callable[[Tensor, Tensor], Tensor]) -> LossOf:
    """The common case: ``loss_fn(model(x), y)`` with the model run on each row of x alone."""

    def loss_of(model: nn.Module, j: int | None, x: Tensor, y: Tensor) -> Tensor:
        return loss_fn(spliced(model, split(x), j), y)

    return loss_of


def _stats(grads: list[Tensor], params: list[Tensor]) -> tuple[float, float]:
    g = torch.cat([x.detach().reshape(-1) for x in grads]).double()
    w = torch.cat([p.detach().reshape(-1) for p in params]).double()
    return float(g @ g), float(g @ w)


def _grads(loss: Tensor, params: list[Tensor]) -> list[Tensor]:
    found = torch.autograd.grad(loss, params, allow_unused=True)
    dense = [torch.zeros_like(p) if g is None else g for g, p in zip(found, params)]
    return [g.to_dense() if g.is_sparse else g for g in dense]


def contributions(
    model: nn.Module,
    loss_of: LossOf,
    args: Sequence[object],
    batch: int | None = None,
    layers_only: Sequence[str] | None = None,
    clone: Clone = copy.deepcopy,
) -> dict:
    """Per layer, ||c_j||^2 and <c_j, W> for j < batch (default len(args[0])), with the
    self-checks (module doc); ``loss_of(copy, j, *args)``. ``layers_only``: the layers whose
    c_j is defined (the others are left out, and the residual is not checked)."""
    batch = len(args[0]) if batch is None else batch
    with torch.random.fork_rng(devices=[]):
        twin = clone(model)
        if getattr(twin, "_compiled_call_impl", None) is not None:  # model.compile(): run eagerly
            twin._compiled_call_impl = None
        named = [(n, p) for n, p in twin.named_parameters() if p.requires_grad]
        params = [p for _, p in named]
        layers: dict[str, list[int]] = {}
        for index, (name, _) in enumerate(named):
            if layers_only is None or layer_of(name) in layers_only:
                layers.setdefault(layer_of(name), []).append(index)
        full = loss_of(twin, None, *args)
        total = _grads(full, params)
        summed = [torch.zeros_like(p) for p in params]
        out = {layer: {"norm2": [], "weight_dot": []} for layer in layers}
        for j in range(batch):
            grads = _grads(loss_of(twin, j, *args), params)
            summed = [s + g for s, g in zip(summed, grads)]
            for layer, idx in layers.items():
                norm2, dot = _stats([grads[i] for i in idx], [params[i] for i in idx])
                out[layer]["norm2"].append(norm2)
                out[layer]["weight_dot"].append(dot)
    for layer, idx in layers.items():  # ||W||: the scale of <c_j, W> (it may cancel to ~0)
        out[layer]["weight_norm"] = _stats([params[i] for i in idx], [params[i] for i in idx])[0] ** 0.5
    scale = max(float(t.abs().max()) for t in total) or 1.0
    residual = max(float((s - t).abs().max()) for s, t in zip(summed, total)) / scale
    return {
        "batch": batch,
        "layers": out,
        "params": {layer: [named[i][0] for i in idx] for layer, idx in layers.items()},
        "all_layers": sorted({layer_of(name) for name, _ in named}),
        "copy_loss": float(full),
        "residual": residual if layers_only is None else None,
    }


class Reference:
    """Steps, their backward calls and losses, and per-backward contributions."""

    def __init__(self, **facts: object) -> None:
        self.facts = facts  # per-idiom expectations, e.g. per_sample_scale, dtype
        self.steps: list[dict] = []
        self._micro: list[dict] = []
        self._loss = 0.0

    def backward(
        self,
        loss: float,
        model: nn.Module | None = None,
        loss_of: LossOf | None = None,
        *args: object,
        **options: object,
    ) -> None:
        """One micro-batch backward the step counts, on a loss of value ``loss``; with a
        model and ``loss_of``, its per-sample contributions (reference pass only)."""
        self._loss += float(loss)
        found = contributions(model, loss_of, args, **options) if ACTIVE and loss_of else {}
        self._micro.append({"loss": float(loss), **found} if found else {})

    def step(self, loss: float | None = None, **extra: object) -> None:
        """The step ends (optimizer stepped or weights changed); ``loss`` overrides the sum."""
        value = self._loss if loss is None else float(loss)
        self.steps.append({"loss": value, "backwards": len(self._micro), "micro": self._micro, **extra})
        self._micro, self._loss = [], 0.0

    def dump(self) -> None:
        if ACTIVE:
            with open(PATH, "w") as handle:
                json.dump({"facts": self.facts, "steps": self.steps}, handle)
