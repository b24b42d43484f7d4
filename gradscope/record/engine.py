"""The per-sample gradient engine: hooks in, per-layer per-sample statistics out.

``capture`` is called by the recorder's global forward hook for each call of a module with
direct trainable parameters. It saves the inputs (detached) and hooks the output tensors;
when all hooked outputs of a call have their gradients, the layer family's kernel turns
them into per-sample gradient contributions (factored or dense, see ``kernels.base``).
Contributions are grouped by Parameter identity, so a parameter used several times (tied
embeddings, shared blocks, an RNNCell in a loop) gets the per-sample gradient of the sum of
its uses; once every use of a parameter is in, its statistics are computed
(``kernels.stats``) and the saved tensors freed. ``collect(scale)`` finishes what is left,
converts to the per-sample-loss convention (hook gradients are c * g_i; c = 1/B for a mean
loss, so scale = B) and clears the state. See docs/per-sample-engine.md.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.graph import get_gradient_edge
from torch.utils._pytree import tree_flatten, tree_map

from gradscope.record.kernels import (
    FACTORED,
    FALLBACK,
    NORM_AFFINE,
    READS_OUTPUT,
    KernelRegistry,
)
from gradscope.record.kernels.base import Contribution, Kernel, KernelInputs
from gradscope.record.kernels.fallback import replay_problem
from gradscope.record.kernels.sketch import SketchProjections
from gradscope.record.kernels.stats import ParamStats, parameter_stats, task_dots

BATCHNORM_TRAIN = "BatchNorm in train mode couples samples: per-sample gradients are not defined"


@dataclass(frozen=True)
class EngineConfig:
    """What the engine computes per layer."""

    gram: bool = False  # also the B x B per-sample Gram per layer (profile "full")
    sketch_dim: int = 4  # k: each layer's sketch has k*k numbers (Kronecker k x k); 0 = none
    seed: int = 0  # seeds the sketch projections (private generator, never the global RNG)
    batch_dim: int | None = None  # None = auto: 0, or 1 for modules with batch_first=False
    route: str = "auto"  # "auto" | "ghost" | "materialize"; auto: ghost when 2 T^2 < P Q


@dataclass(frozen=True)
class Coverage:
    """Static judgement of how a module's per-sample gradients are computed."""

    method: str  # "ghost" | "materialize" | "norm-affine" | "fallback" | "none"
    covered: bool
    reason: str = ""  # why not covered


@dataclass
class LayerStats:
    """Per-sample statistics of one layer, summed over its parameters (per-sample loss)."""

    norm2: Tensor  # [B] ||g_i||^2
    weight_dot: Tensor  # [B] <g_i, W>, weights as they are during backward
    sketch: Tensor | None  # [B, k*k], sum over the layer's params of independent sketches
    gram: Tensor | None  # [B, B] K_ij = <g_i, g_j>, when config.gram


@dataclass
class _Use:
    """One call of one module in the current forward."""

    name: str
    module: nn.Module
    kernel: Kernel
    inputs: KernelInputs | None
    params: dict[str, nn.Parameter]
    out_meta: list[tuple[torch.Size, torch.dtype, torch.device]]
    grads: list[Tensor | None]
    waiting: int
    generation: int
    done: bool = False
    edges: list[Any] = field(default_factory=list)  # GradientEdge per hooked output (tasks)


@dataclass
class TaskTargets:
    """Pending module calls whose per-sample gradients can be split by task (see
    ``PerSampleEngine.task_targets``); ``edges`` are their hooked outputs, in order."""

    uses: list[_Use]
    edges: list[Any]


@dataclass
class _Entry:
    """One Parameter in the current forward, with the contributions of its uses."""

    param: nn.Parameter
    layer: str  # the first module that used it
    qualname: str
    remaining: int = 0
    contributions: list[Contribution] = field(default_factory=list)
    failed: bool = False
    finished: bool = False


class PerSampleEngine:
    """Per-sample gradient statistics from forward inputs and output-gradient hooks."""

    def __init__(self, config: EngineConfig) -> None:
        if config.route not in ("auto", "ghost", "materialize"):
            raise ValueError(f"route must be auto, ghost or materialize, not {config.route!r}")
        self.config = config
        self.suspended = False
        self._in_kernel = False
        self.failures: list[tuple[str, str]] = []  # (layer, reason): kernels that raised
        self.skipped: dict[str, str] = {}  # layer -> why it was not recorded (latest reason)
        self.routes: dict[str, str] = {}  # qualified parameter name -> last route used
        # qualified parameter name -> how <g_i, W> was last computed: "output" (from the
        # layers' outputs), "einsum" (W R_it from the factors), "mixed", or "dense"
        self.weight_dot_routes: dict[str, str] = {}
        self.projections = SketchProjections(config.sketch_dim, config.seed)
        self._registry = KernelRegistry()
        self._disabled: set[str] = set()
        self._generation = 0
        self._clear()

    # ----------------------------------------------------------------- static coverage
    def coverage(self, module: nn.Module) -> Coverage:
        """How per-sample gradients of the module's direct parameters are computed."""
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if module.training:
                return Coverage("none", False, BATCHNORM_TRAIN)
            if not module.track_running_stats:
                return Coverage("none", False, "BatchNorm without running stats couples samples")
        if isinstance(module, nn.Embedding) and module.scale_grad_by_freq:
            return Coverage("none", False, "scale_grad_by_freq couples samples through counts")
        method, _ = self._registry.lookup(module)
        if method == FALLBACK:
            problem = replay_problem(module)
            return Coverage("none", False, problem) if problem else Coverage(FALLBACK, True)
        if method == FACTORED:
            route = "materialize" if self.config.route == "materialize" else "ghost"
            return Coverage(route, True)
        return Coverage(method, True)

    @property
    def replaying(self) -> bool:
        """True while a kernel re-runs a module's forward (module calls then are not the user's)."""
        return self._in_kernel

    # ----------------------------------------------------------------- forward side
    def capture(
        self, name: str, module: nn.Module, args: tuple, kwargs: dict, output: Any
    ) -> None:
        """Save one module call's inputs and hook its outputs; never raises."""
        if self.suspended or self._in_kernel:  # a kernel's own replay of a forward
            return
        try:
            self._capture(name, module, args, kwargs, output)
        except Exception as error:  # noqa: BLE001 - never raise into training
            self._fail(name, error)

    def _capture(self, name: str, module: nn.Module, args: tuple, kwargs: dict, output: Any):
        params = self._registry.parameters(module)
        if not params:
            return
        reason = self._skip_reason(name, module, args, kwargs)
        if reason is not None:
            self.skipped[name] = reason
            self._uncaptured.update(id(p) for p in params.values())
            return
        flat = tree_flatten(output)[0]
        slots = tuple(
            i for i, t in enumerate(flat) if isinstance(t, Tensor) and t.requires_grad
        )
        if not slots:
            return
        kernel = self._registry.lookup(module)[1]
        inputs = KernelInputs(
            args=tree_map(_detach, args),
            kwargs=tree_map(_detach, kwargs),
            batch_dim=self._batch_dim(module),
            batch_size=self._batch_size,
            output_slots=slots,
        )
        if kernel in READS_OUTPUT and len(flat) == 1 and type(flat[0]) is Tensor:
            # <G_i, W> = sum_t b_it . (y_it - bias): keep y (a reference; autograd usually
            # keeps it anyway) with the versions that tell an in-place edit since now
            output = flat[0].detach()
            weights = [getattr(module, attr, None) for attr in ("weight", "bias")]
            inputs.output = output
            inputs.versions = tuple(
                (t, t._version) for t in (output, *weights) if isinstance(t, Tensor)
            )
        use = _Use(
            name=name,
            module=module,
            kernel=kernel,
            inputs=inputs,
            params=params,
            out_meta=[(flat[s].shape, flat[s].dtype, flat[s].device) for s in slots],
            grads=[None] * len(slots),
            waiting=len(slots),
            generation=self._generation,
            edges=[_gradient_edge(flat[s]) for s in slots],
        )
        for attr, param in params.items():
            entry = self._entries.get(id(param))
            if entry is None:
                qualname = f"{name}.{attr}" if name else attr
                entry = _Entry(param, layer=qualname.rpartition(".")[0], qualname=qualname)
                self._entries[id(param)] = entry
                self._layer_order.setdefault(entry.layer, None)
            entry.remaining += 1
        self._uses.append(use)
        for rank, slot in enumerate(slots):
            flat[slot].register_hook(functools.partial(self._on_grad, use, rank))

    def _skip_reason(self, name: str, module: nn.Module, args: tuple, kwargs: dict):
        """Why this call is not recorded, or None; sets B on the first recorded call."""
        if name in self._disabled:
            return "disabled after a kernel failure"
        coverage = self.coverage(module)
        if not coverage.covered:
            return coverage.reason
        batch_dim = self._batch_dim(module)
        main = next((t for t in tree_flatten((args, kwargs))[0] if isinstance(t, Tensor)), None)
        if main is None or main.dim() <= batch_dim:
            return f"no tensor input with a batch dim {batch_dim}"
        if self._batch_size is None:
            self._batch_size = main.shape[batch_dim]
        elif main.shape[batch_dim] != self._batch_size:
            if self.config.batch_dim is None and isinstance(getattr(module, "batch_first", None), bool):
                # A module that declares its layout disagrees with the batch size taken from
                # dim 0 of earlier layers: a sequence-first model; B was wrong for them.
                self.batch_conflict = (name, batch_dim, main.shape[batch_dim], self._batch_size)
            return (
                f"input has size {main.shape[batch_dim]} at batch dim {batch_dim}, "
                f"the batch size is {self._batch_size}: an input shared by the whole batch "
                "(e.g. position ids) hides per-sample gradients from output hooks"
            )
        return None

    batch_conflict: tuple[str, int, int, int] | None = None  # (layer, dim, its B, inferred B)

    def _batch_dim(self, module: nn.Module) -> int:
        if self.config.batch_dim is not None:
            return self.config.batch_dim
        return 1 if getattr(module, "batch_first", True) is False else 0

    # ----------------------------------------------------------------- backward side
    def _on_grad(self, use: _Use, rank: int, grad: Tensor) -> None:
        if self.suspended or use.generation != self._generation or use.done:
            return
        try:
            if use.grads[rank] is not None:  # a second backward through the same graph
                use.grads[rank] = use.grads[rank] + grad.detach()
                return
            use.grads[rank] = grad.detach()
            use.waiting -= 1
            if use.waiting == 0:
                self._evaluate(use)
        except Exception as error:  # noqa: BLE001 - never raise into training
            self._fail(use.name, error)

    def _evaluate(self, use: _Use) -> None:
        """Run the kernel on one call (missing output gradients are zeros) and free it."""
        use.done = True
        contributions: dict[str, Contribution] = {}
        try:
            if use.inputs is not None and all(g is None for g in use.grads):
                _check_output_not_rewritten(use.inputs)
            if any(g is not None for g in use.grads):
                backprops = tuple(
                    g if g is not None else torch.zeros(shape, dtype=dtype, device=device)
                    for g, (shape, dtype, device) in zip(use.grads, use.out_meta, strict=True)
                )
                self._in_kernel = True
                contributions = use.kernel(use.module, use.inputs, backprops)
        except Exception as error:  # noqa: BLE001 - never raise into training
            self._fail(use.name, error)
            for param in use.params.values():
                self._entries[id(param)].failed = True
        finally:
            self._in_kernel = False
            use.inputs, use.grads, use.edges = None, [], []
        for attr, param in use.params.items():
            entry = self._entries[id(param)]
            if attr in contributions:
                entry.contributions.append(contributions[attr])
            entry.remaining -= 1
            if entry.remaining == 0:
                self._finish(entry)

    def _finish(self, entry: _Entry) -> None:
        """All uses of a parameter are in: compute its statistics and free its factors."""
        entry.finished = True
        if id(entry.param) in self._uncaptured:
            entry.failed = True
            self.skipped[entry.layer] = f"{entry.qualname} is shared with an unrecorded module"
        try:
            if not entry.failed:
                stats = self._param_stats(entry)
                self.routes[entry.qualname] = stats.route
                self.weight_dot_routes[entry.qualname] = stats.weight_dot_route
                self._layer_stats.setdefault(entry.layer, []).append(stats)
        except Exception as error:  # noqa: BLE001 - never raise into training
            self._fail(entry.layer, error)
            entry.failed = True
        finally:
            entry.contributions = []
        if entry.failed:
            self._failed_layers.add(entry.layer)

    def _param_stats(self, entry: _Entry) -> ParamStats:
        param = entry.param
        dtype = torch.promote_types(param.dtype, torch.float32)
        projection = None
        if self.config.sketch_dim > 0:
            projection = self.projections.get(entry.qualname, param, dtype)
        if not entry.contributions:  # no hooked output received a gradient: g_i = 0
            return _zero_stats(param, self._batch_size, dtype, self.config)
        return parameter_stats(
            param, entry.contributions, projection, self.config.gram, self.config.route
        )

    # ----------------------------------------------------------------- per-sample tasks
    def task_targets(self, batch: int) -> TaskTargets:
        """The pending calls whose kernels can split per-sample gradients by task.

        Factored (Linear, Conv, Embedding, GPT-2 Conv1D) and norm-affine families only:
        the torch.func fallback would replay the module once per task, so its layers are
        left out of per-sample task conflict. Call between the forward and the backward;
        differentiate the tasks with respect to ``edges`` and pass the result to
        ``task_sample_gram``. Empty when ``batch`` (the task losses' B) is not the B the
        engine saw.
        """
        if batch != self._batch_size:
            return TaskTargets(uses=[], edges=[])
        uses = [
            use
            for use in self._uses
            if use.generation == self._generation and not use.done and use.inputs is not None
            and use.edges and all(e is not None for e in use.edges) and use.name not in self._disabled
            and self._registry.lookup(use.module)[0] in (FACTORED, NORM_AFFINE)
        ]
        return TaskTargets(uses=uses, edges=[edge for use in uses for edge in use.edges])

    def task_sample_gram(
        self, targets: TaskTargets, output_grads: Sequence[Tensor | None], tasks: int
    ) -> dict[str, Tensor]:
        r"""Per layer, D[i, a, b] = <g_i^a, g_i^b>: [B, K, K] per-sample cross-task dots.

        ``output_grads[e]`` is [K, *output shape] (row k: the gradient of task k's summed
        per-sample loss with respect to ``targets.edges[e]``), or None when no task reaches
        that output. Row i of an output gradient is then sample i's own loss gradient, so D
        is in the per-sample-loss convention (no rescaling). Each call's kernel runs once
        per task; ``kernels.stats.task_dots`` combines a parameter's uses. A layer is
        reported only when every use of each of its parameters is a target. Does not touch
        the state ``collect`` uses; raises on failure (the caller guards).
        """
        batch = self._batch_size
        if batch is None or not targets.uses:
            return {}
        targeted: dict[int, int] = {}
        for use in targets.uses:
            for param in use.params.values():
                targeted[id(param)] = targeted.get(id(param), 0) + 1
        layers = self._task_layers(targeted)
        per_param: dict[int, list[list[Contribution]]] = {}
        grads = iter(output_grads)
        for use in targets.uses:
            use_grads = [next(grads) for _ in use.edges]
            if all(g is None for g in use_grads) or not all(
                self._entries[id(p)].layer in layers for p in use.params.values()
            ):
                continue
            for task in range(tasks):
                for attr, contribution in self._task_contributions(use, use_grads, task).items():
                    slots = per_param.setdefault(id(use.params[attr]), [[] for _ in range(tasks)])
                    slots[task].append(contribution)
        result: dict[str, Tensor] = {}
        for layer in self._layer_order:
            for entry in layers.get(layer, []):
                contributions = per_param.get(id(entry.param), [[] for _ in range(tasks)])
                dots = task_dots(entry.param, contributions, batch, self.config.route)
                result[layer] = dots if layer not in result else result[layer] + dots
        return result

    def _task_layers(self, targeted: dict[int, int]) -> dict[str, list[_Entry]]:
        """Layers all of whose parameters have every pending use among the targets."""
        layers: dict[str, list[_Entry]] = {}
        excluded: set[str] = set(self._failed_layers)
        for entry in self._entries.values():
            whole = targeted.get(id(entry.param), 0) == entry.remaining > 0
            if entry.failed or entry.finished or id(entry.param) in self._uncaptured or not whole:
                excluded.add(entry.layer)
            layers.setdefault(entry.layer, []).append(entry)
        return {name: entries for name, entries in layers.items() if name not in excluded}

    def _task_contributions(
        self, use: _Use, grads: list[Tensor | None], task: int
    ) -> dict[str, Contribution]:
        """One call's kernel on task ``task``'s output gradients (missing ones are zeros)."""
        backprops = tuple(
            g[task] if g is not None else torch.zeros(shape, dtype=dtype, device=device)
            for g, (shape, dtype, device) in zip(grads, use.out_meta, strict=True)
        )
        self._in_kernel = True
        try:
            return use.kernel(use.module, use.inputs, backprops)
        finally:
            self._in_kernel = False

    # ----------------------------------------------------------------- end of backward
    def collect(self, scale: float | Tensor) -> dict[str, LayerStats]:
        """Per-layer statistics of this backward in the per-sample-loss convention; clears."""
        try:
            for use in self._uses:
                if not use.done and use.generation == self._generation:
                    self._evaluate(use)
            for entry in self._entries.values():
                if not entry.finished:
                    self._finish(entry)
            result = {}
            for layer in self._layer_order:
                if layer in self._failed_layers or layer not in self._layer_stats:
                    continue
                result[layer] = _combine(self._layer_stats[layer], scale)
            return result
        except Exception as error:  # noqa: BLE001 - never raise into training
            self._fail("<collect>", error)
            return {}
        finally:
            self._clear()

    def discard(self) -> None:
        """Drop what was captured in a forward that has no backward."""
        self._clear()

    def _clear(self) -> None:
        self._generation += 1
        self._batch_size: int | None = None
        self._uses: list[_Use] = []
        self._entries: dict[int, _Entry] = {}
        self._layer_order: dict[str, None] = {}
        self._layer_stats: dict[str, list[ParamStats]] = {}
        self._failed_layers: set[str] = set()
        self._uncaptured: set[int] = set()

    def _fail(self, name: str, error: BaseException) -> None:
        message = str(error).strip().splitlines()
        reason = f"{type(error).__name__}: {message[0] if message else ''}"
        self.failures.append((name, reason))
        self._disabled.add(name)


def _check_output_not_rewritten(inputs: KernelInputs) -> None:
    """No output gradient arrived and the kept output was modified in place: torch drops a
    tensor hook when a view (e.g. a Linear's output on [B, T, d]) is modified in place, so
    zeros would be wrong. Raise (the layer fails) rather than report g_i = 0."""
    if inputs.output is not None and inputs.output._version != inputs.versions[0][1]:
        raise RuntimeError(
            "the layer's output was modified in place and its gradient hook never fired"
        )


def _gradient_edge(tensor: Tensor) -> Any:
    """Where a task backward can stop at this output (``task_targets``); None if unavailable."""
    try:
        return get_gradient_edge(tensor)
    except Exception:  # noqa: BLE001 - only per-sample task conflict needs it
        return None


def _detach(x: Any) -> Any:
    return x.detach() if isinstance(x, Tensor) else x


def _zero_stats(
    param: Tensor, batch: int, dtype: torch.dtype, config: EngineConfig
) -> ParamStats:
    zeros = param.new_zeros(batch, dtype=dtype)
    sketch = param.new_zeros(batch, config.sketch_dim**2, dtype=dtype)
    gram = param.new_zeros(batch, batch, dtype=dtype) if config.gram else None
    return ParamStats(zeros, zeros, sketch if config.sketch_dim else None, gram, "none", "none")


def _combine(stats: list[ParamStats], scale: float | Tensor) -> LayerStats:
    """Sum a layer's parameter statistics and rescale: squares by scale^2, linear by scale."""
    square = scale * scale
    sketch = None if stats[0].sketch is None else sum(s.sketch for s in stats) * scale
    gram = None if stats[0].gram is None else sum(s.gram for s in stats) * square
    return LayerStats(
        norm2=sum(s.norm2 for s in stats) * square,
        weight_dot=sum(s.weight_dot for s in stats) * scale,
        sketch=sketch,
        gram=gram,
    )
