"""Test oracle (a naive per-sample autograd loop) and a tiny recording harness."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.modules.module import register_module_forward_hook

from gradscope.record.engine import EngineConfig, LayerStats, PerSampleEngine

Layers = dict[str, list[tuple[str, nn.Parameter]]]  # layer -> [(qualified name, parameter)]


@contextmanager
def recording(engine: PerSampleEngine, model: nn.Module) -> Iterator[None]:
    """Call engine.capture from a global forward hook for modules of ``model`` with params."""
    names = {}
    for name, module in model.named_modules():
        names.setdefault(id(module), name)

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        direct = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if id(module) in names and direct and torch.is_grad_enabled():
            engine.capture(names[id(module)], module, args, kwargs, output)

    handle = register_module_forward_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def engine_stats(
    model: nn.Module,
    per_sample_loss: Callable[[], Tensor],
    config: EngineConfig,
    reduction: str = "mean",
) -> tuple[dict[str, LayerStats], PerSampleEngine]:
    """One recorded step: forward, batch loss (mean or sum of per-sample losses), collect."""
    engine = PerSampleEngine(config)
    with recording(engine, model):  # hook stays on through backward, as in the recorder
        losses = per_sample_loss()
        loss = losses.mean() if reduction == "mean" else losses.sum()
        loss.backward()
        stats = engine.collect(losses.shape[0] if reduction == "mean" else 1.0, step=0)
    model.zero_grad(set_to_none=True)
    return stats, engine


def reference_layers(model: nn.Module, per_sample_loss: Callable[[], Tensor]) -> Layers:
    """Each trainable parameter under the first module (in forward order) that used it."""
    names = {}
    for name, module in model.named_modules():
        names.setdefault(id(module), name)
    layers: Layers = {}
    seen: set[int] = set()

    def hook(module: nn.Module, args: tuple, output: object) -> None:
        for attr, p in module.named_parameters(recurse=False):
            if id(module) in names and p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                name = names[id(module)]
                qualname = f"{name}.{attr}" if name else attr
                layers.setdefault(name, []).append((qualname, p))

    handle = register_module_forward_hook(hook)
    try:
        per_sample_loss()
    finally:
        handle.remove()
    for qualname, p in model.named_parameters():  # used by a parent through F.* (out_proj)
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            layers.setdefault(qualname.rpartition(".")[0], []).append((qualname, p))
    return layers


def reference_per_sample_grads(
    per_sample_loss: Callable[[], Tensor], params: list[nn.Parameter]
) -> list[Tensor]:
    """g_i for every parameter by one autograd call per sample: [B, *shape] each."""
    losses = per_sample_loss()
    rows = []
    for i in range(losses.shape[0]):
        grads = torch.autograd.grad(losses[i], params, retain_graph=True, allow_unused=True)
        rows.append([torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)])
    return [torch.stack([row[j] for row in rows]) for j in range(len(params))]


def reference_sketch(grad: Tensor, projection: tuple[Tensor, ...]) -> Tensor:
    """P_out G_i P_in^T (>= 2-D) or Pi g_i (1-D), computed densely: [B, k*k]."""
    batch = grad.shape[0]
    if len(projection) == 2:
        g3 = grad.reshape(batch, grad.shape[1], -1)
        return torch.stack([projection[0] @ g @ projection[1].t() for g in g3]).flatten(1)
    return grad.reshape(batch, -1) @ projection[0].t()


def reference_layer_stats(
    model: nn.Module, per_sample_loss: Callable[[], Tensor], engine: PerSampleEngine
) -> dict[str, dict[str, Tensor]]:
    """norm2, weight_dot, gram and the dense sketch of each layer, from the naive loop."""
    layers = reference_layers(model, per_sample_loss)
    params = [p for entries in layers.values() for _, p in entries]
    grads = dict(zip([id(p) for p in params], reference_per_sample_grads(per_sample_loss, params)))
    result = {}
    for layer, entries in layers.items():
        flat = torch.cat([grads[id(p)].reshape(grads[id(p)].shape[0], -1) for _, p in entries], dim=1)
        weights = torch.cat([p.detach().reshape(-1) for _, p in entries])
        stats = {"norm2": (flat * flat).sum(1), "weight_dot": flat @ weights, "gram": flat @ flat.t()}
        k = engine.config.sketch_dim
        if k:
            stats["sketch"] = sum(
                reference_sketch(grads[id(p)], engine.projections.get(q, p, p.dtype))
                for q, p in entries
            )
        result[layer] = stats
    return result


def assert_matches_reference(
    model: nn.Module,
    per_sample_loss: Callable[[], Tensor],
    config: EngineConfig | None = None,
    reduction: str = "mean",
    rtol: float = 1e-5,
) -> dict[str, LayerStats]:
    """Run the engine and the oracle on the same model and compare every layer."""
    config = config or EngineConfig(gram=True)
    stats, engine = engine_stats(model, per_sample_loss, config, reduction)
    assert not engine.failures, engine.failures
    expected = reference_layer_stats(model, per_sample_loss, engine)
    assert set(stats) == set(expected), (list(stats), list(expected))
    for layer, want in expected.items():
        got = stats[layer]
        for key, value in want.items():
            actual = getattr(got, key)
            if key == "gram" and not config.gram:
                continue
            scale = value.abs().max().item() + 1e-30
            torch.testing.assert_close(
                actual, value, rtol=rtol, atol=rtol * scale, msg=lambda m, k=key, n=layer: f"{n}.{k}: {m}"
            )
    return stats


def reference_contributions(
    model: nn.Module, inputs: Tensor, loss_of_output: Callable[[Tensor], Tensor]
) -> dict[str, dict[str, Tensor]]:
    """Each sample's exact contribution c_j to the gradient of the script's batch loss, per
    layer: norm2 ``|c_j|^2`` and weight_dot ``<c_j, W>``, shape [B] each.

    One sample at a time: the model runs on each sample alone; the batch output keeps only
    sample j's output on the graph (the others detached) and the script's own loss of that
    batch output is differentiated. Exact for any reduction (ignore_index, label smoothing,
    a penalty on the outputs, a division for accumulation), as long as samples do not
    interact in the forward pass.
    """
    layers = reference_layers(model, lambda: model(inputs))
    params = [p for entries in layers.values() for _, p in entries]
    outputs = [model(inputs[j : j + 1]) for j in range(inputs.shape[0])]
    rows = []
    for j in range(len(outputs)):
        batch = torch.cat([o if i == j else o.detach() for i, o in enumerate(outputs)])
        grads = torch.autograd.grad(loss_of_output(batch), params, retain_graph=True, allow_unused=True)
        rows.append([torch.zeros_like(p) if g is None else g.to_dense() for g, p in zip(grads, params)])
    by_param = {id(p): torch.stack([row[k] for row in rows]) for k, p in enumerate(params)}
    result = {}
    for layer, entries in layers.items():
        flat = torch.cat([by_param[id(p)].flatten(1).double() for _, p in entries], dim=1)
        weights = torch.cat([p.detach().reshape(-1).double() for _, p in entries])
        result[layer] = {"norm2": (flat * flat).sum(1), "weight_dot": flat @ weights}
    return result
