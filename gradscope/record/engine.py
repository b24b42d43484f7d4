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
loss, so scale = B) and clears the state, feeding the coverage ledger (``coverage.py``)
with what each layer got. The calls of one forward must agree on the batch
(``kernels.batch``) and all its hooks must fire in one backward: a double backward
(create_graph=True), a second pass through a retained graph, or disagreeing batch sizes
drop the step's values with a reason rather than report wrong ones. Calls re-run inside a
backward (gradient checkpointing) are captured; those never given a gradient are dropped.
See docs/per-sample-engine.md.
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_map

from gradscope.record.coverage import (
    COMPILED,
    DOUBLE_BACKWARD,
    NO_OUTPUT,
    RECOMPUTED_ONLY,
    SEVERAL_PASSES,
    UPSTREAM_OF_BATCHNORM,
    CoverageLedger,
    StepEvidence,
)
from gradscope.record.kernels import READS_OUTPUT, KernelRegistry
from gradscope.record.kernels.base import Contribution, KernelInputs
from gradscope.record.kernels.batch import CallBatch, call_batch, resolve
from gradscope.record.kernels.calls import (
    Entry,
    TaskSplit,
    TaskTargets,
    Use,
    check_output_not_rewritten,
    detach,
    gradient_edge,
    graph_task,
)
from gradscope.record.kernels.judge import BATCHNORM_TRAIN, Coverage, judge
from gradscope.record.kernels.sketch import SketchProjections
from gradscope.record.kernels.stats import ParamStats, parameter_stats
from gradscope.record.names import ORIG_MOD, is_parametrization, layer_parameters, owner_layer

__all__ = [
    "BATCHNORM_TRAIN", "Coverage", "EngineConfig", "LayerStats", "PerSampleEngine", "TaskTargets",
]


@dataclass(frozen=True)
class EngineConfig:
    """What the engine computes per layer."""

    gram: bool = False  # also the B x B per-sample Gram per layer (profile "full")
    sketch_dim: int = 4  # k: each layer's sketch has k*k numbers (Kronecker k x k); 0 = none
    seed: int = 0  # seeds the sketch projections (private generator, never the global RNG)
    batch_dim: int | None = None  # None = auto: 0, or 1 for modules with batch_first=False
    route: str = "auto"  # "auto" | "ghost" | "materialize"; auto: ghost when 2 T^2 < P Q


@dataclass
class LayerStats:
    """Per-sample statistics of one layer, summed over its parameters (per-sample loss)."""

    norm2: Tensor  # [B] ||g_i||^2
    weight_dot: Tensor  # [B] <g_i, W>, weights as they are during backward
    sketch: Tensor | None  # [B, k*k], sum over the layer's params of independent sketches
    gram: Tensor | None  # [B, B] K_ij = <g_i, g_j>, when config.gram
    # norm2 and weight_dot over the layer's parameter named "weight" alone (GWA's head score)
    weight_norm2: Tensor | None = None
    weight_weight_dot: Tensor | None = None


class PerSampleEngine(TaskSplit, StepEvidence):
    """Per-sample gradient statistics from forward inputs and output-gradient hooks."""

    batch_conflict: tuple[str, int, int, int] | None = None  # (layer, dim, its B, inferred B)

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
        self.ledger = CoverageLedger()
        # 1 / the GradScaler's scale for the running backward (None: no scaler). Applied to
        # the output gradients before a kernel squares them: a large scale (bf16 never backs
        # off) would overflow |c_i|^2 in float32; a power of 2, so the division is exact.
        self.grad_scale: Tensor | None = None
        self._registry = KernelRegistry()
        self._disabled: dict[str, str] = {}  # module name -> the failure that disabled it
        self._standing: dict[str, str] = {}  # layer -> reason it never gets rows (compiled)
        self._compiled: weakref.WeakSet[nn.Module] = weakref.WeakSet()
        self._compiled_roots: weakref.WeakSet[nn.Module] = weakref.WeakSet()
        self._step: int | None = None
        self._step_drop: str | None = None
        self._last_collect: tuple[int, int | None] | None = None  # (generation, step)
        self._generation = 0
        self._clear()

    # ----------------------------------------------------------------- static coverage
    def coverage(self, module: nn.Module) -> Coverage:
        """How per-sample gradients of the module's direct parameters are computed."""
        if module in self._compiled:
            return Coverage("none", False, COMPILED)
        return judge(module, self._registry, self.config.route)

    def mark_compiled(self, module: nn.Module, names: Any, step: int | None = None) -> bool:
        """``module`` is compiled (an OptimizedModule, or ``m.compile()``): its layers run inside
        torch.compile, where gradscope's hooks stay out. True when new layers were marked."""
        if step is not None:
            self._step = step
        if module in self._compiled_roots:
            return False
        self._compiled_roots.add(module)
        marked = False
        for sub in module._modules.get(ORIG_MOD, module).modules():
            name = names.module(sub)
            if name is None or is_parametrization(sub) or not layer_parameters(sub):
                continue
            self._compiled.add(sub)
            marked |= self._standing.setdefault(name, COMPILED) == COMPILED
        return marked

    @property
    def replaying(self) -> bool:
        """True while a kernel re-runs a module's forward (module calls then are not the user's)."""
        return self._in_kernel

    # ----------------------------------------------------------------- forward side
    def capture(
        self, name: str, module: nn.Module, args: tuple, kwargs: dict, output: Any,
        step: int | None = None,
    ) -> None:
        """Save one module call's inputs and hook its outputs; never raises."""
        if torch.compiler.is_compiling() or self.suspended or self._in_kernel:
            return  # inside a compiled region, or a kernel's own replay of a forward
        if step is not None:
            self._step = step
        try:
            self._capture(name, module, args, kwargs, output)
        except Exception as error:  # noqa: BLE001 - never raise into training
            self._fail(name, error)

    def _capture(self, name: str, module: nn.Module, args: tuple, kwargs: dict, output: Any):
        params = self._registry.parameters(module)
        if not params:
            return
        layer = owner_layer(name)
        reason = self._disabled.get(name)
        if reason is None:
            coverage = self.coverage(module)
            reason = None if coverage.covered else coverage.reason
        batch = call_batch(name, module, args, kwargs, self._batch_dim(module))
        if reason is None and batch is None:
            reason = f"no tensor input with a batch dim {self._batch_dim(module)}"
        flat = [output] if isinstance(output, Tensor) else tree_flatten(output)[0]
        slots = tuple(i for i, t in enumerate(flat) if isinstance(t, Tensor) and t.requires_grad)
        if reason is None and not slots:
            reason = NO_OUTPUT
        if reason is None and self._resolved and batch.size != self._batch_size:
            reason = f"input has batch size {batch.size} during the backward, not {self._batch_size}"
        if reason is not None:
            self._skip(layer, reason, params.values())
            if reason == BATCHNORM_TRAIN:
                self._couple_earlier_layers()
            return
        use = Use(
            name=name, layer=layer, module=module, kernel=self._registry.lookup(module)[1],
            inputs=self._inputs(module, args, kwargs, batch, slots, flat), params=params,
            out_meta=[(flat[s].shape, flat[s].dtype, flat[s].device) for s in slots],
            grads=[None] * len(slots), waiting=len(slots), generation=self._generation,
            edges=[gradient_edge(flat[s]) for s in slots], batch=batch,
            in_backward=graph_task() != -1,
        )
        for attr, param in params.items():
            entry = self._entries.get(id(param))
            if entry is None:
                qualname = f"{name}.{attr}" if name else attr
                entry = Entry(param, layer=owner_layer(qualname.rpartition(".")[0]), qualname=qualname)
                self._entries[id(param)] = entry
                self._layer_order.setdefault(entry.layer, None)
            entry.remaining += 1
        self._uses.append(use)
        for rank, slot in enumerate(slots):
            flat[slot].register_hook(functools.partial(self._on_grad, use, rank))

    def _couple_earlier_layers(self) -> None:
        """A train-mode BatchNorm ran: the output gradients of every layer that ran before
        it in this forward mix all samples through the batch statistics, so their per-sample
        values are not defined. Those layers are dropped for this backward (layers in a
        parallel branch are dropped too: never a wrong number)."""
        for entry in self._entries.values():
            if not entry.failed:
                entry.failed = True
                self._missing.setdefault(entry.layer, UPSTREAM_OF_BATCHNORM)

    def _inputs(self, module, args, kwargs, batch: CallBatch, slots, flat) -> KernelInputs:
        plain = not kwargs and all(isinstance(a, Tensor) for a in args)  # no pytree walk (0.2 ms)
        inputs = KernelInputs(
            args=tuple(a.detach() for a in args) if plain else tree_map(detach, args),
            kwargs={} if plain else tree_map(detach, kwargs),
            batch_dim=self._batch_dim(module), batch_size=batch.size, output_slots=slots,
            route=self.config.route,
        )
        kernel = self._registry.lookup(module)[1]
        if kernel in READS_OUTPUT and len(flat) == 1 and type(flat[0]) is Tensor:
            # <G_i, W> = sum_t b_it . (y_it - bias): keep y (a reference; autograd usually
            # keeps it anyway) with the versions that tell an in-place edit since now
            output = flat[0].detach()
            weights = [module._parameters.get(attr) for attr in ("weight", "bias")]
            inputs.output = output
            inputs.versions = tuple(
                (t, t._version) for t in (output, *weights) if isinstance(t, Tensor)
            )
        return inputs

    def _skip(self, layer: str, reason: str, params: Any) -> None:
        """A call that is not recorded: its layer gets no rows this step, and every
        parameter it uses is unrecorded (a partial sum over its uses would be wrong)."""
        self.skipped[layer] = reason
        self._missing.setdefault(layer, reason)
        self._uncaptured.update(id(p) for p in params)

    def _batch_dim(self, module: nn.Module) -> int:
        if self.config.batch_dim is not None:
            return self.config.batch_dim
        return 1 if getattr(module, "batch_first", True) is False else 0

    def _resolve(self) -> None:
        """Once per forward, when its backward starts: B, broadcast calls, disagreement."""
        if self._resolved:
            return
        self._resolved = True
        uses = [u for u in self._uses if not u.done]
        result = resolve([u.batch for u in uses])
        for index, reason in result.broadcast.items():
            uses[index].done = True
            self._skip(uses[index].layer, reason, uses[index].params.values())
        if result.conflict is not None:
            if result.layout_hint is not None and self.config.batch_dim is None:
                hint, first = uses[result.layout_hint], uses[0]
                self.batch_conflict = (hint.name, hint.inputs.batch_dim, hint.batch.size, first.batch.size)
            self._drop = self._drop or result.conflict
        self._batch_size = result.batch
        for use in uses:
            use.inputs.batch_size = result.batch

    # ----------------------------------------------------------------- backward side
    def _on_grad(self, use: Use, rank: int, grad: Tensor) -> None:
        if self.suspended or torch.compiler.is_compiling():
            return
        try:
            if use.generation != self._generation:
                self._stale(use)
            elif torch.is_grad_enabled():  # autograd runs this backward with create_graph=True
                self._drop = self._drop or DOUBLE_BACKWARD
            elif not use.in_backward and self._task not in (None, graph_task()):
                self._drop = self._drop or SEVERAL_PASSES
            elif not use.done:
                self._task = self._task if use.in_backward else graph_task()
                self._resolve()
                if use.done or use.grads[rank] is not None:
                    return
                use.grads[rank] = grad.detach()
                use.waiting -= 1
                if use.waiting == 0 and not self._drop:
                    self._evaluate(use)
        except Exception as error:  # noqa: BLE001 - never raise into training
            self._fail(use.name, error)

    def _evaluate(self, use: Use) -> None:
        """Run the kernel on one call (missing output gradients are zeros) and free it; a
        call captured during a backward that got no gradient (a checkpoint's recomputation
        that is never backpropagated) is dropped, not counted as zeros."""
        use.done = True
        use.received = any(g is not None for g in use.grads)
        contributions: dict[str, Contribution] = {}
        dropped = use.in_backward and not use.received
        try:
            if use.inputs is not None and not use.received:
                check_output_not_rewritten(use.inputs)
            if use.received and not self._drop:
                backprops = tuple(
                    g if g is not None else torch.zeros(shape, dtype=dtype, device=device)
                    for g, (shape, dtype, device) in zip(use.grads, use.out_meta, strict=True)
                )
                if self.grad_scale is not None:
                    backprops = tuple(g * self.grad_scale.to(g.device) for g in backprops)
                self._in_kernel = True
                contributions = use.kernel(use.module, use.inputs, backprops)
                unknown = sorted(set(use.params) - set(contributions))
                if unknown:  # never report g_i = 0 for a parameter the kernel does not model
                    raise RuntimeError(f"the kernel gives no per-sample gradient for {', '.join(unknown)}")
                self._methods[use.layer] = self._method(use.module)
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
            entry.live += 0 if dropped else 1
            entry.remaining -= 1
            if entry.remaining == 0:
                self._finish(entry)

    def _method(self, module: nn.Module) -> str:
        """The method a call used: its static one, or the fallback's per-sample loop."""
        loop = self._registry.fallback.loops.get(type(module))
        if loop is not None and self._registry.lookup(module)[1] is self._registry.fallback:
            return f"fallback-loop (vmap failed: {loop})"
        return self.coverage(module).method

    def _finish(self, entry: Entry) -> None:
        """All uses of a parameter are in: compute its statistics and free its factors."""
        entry.finished = True
        if id(entry.param) in self._uncaptured:
            entry.failed = True
            if entry.layer not in self._missing:
                self._skip(entry.layer, f"{entry.qualname} is shared with an unrecorded module", ())
        elif not entry.live:
            entry.failed = True
            self._missing.setdefault(entry.layer, RECOMPUTED_ONLY)
        try:
            if not entry.failed and not self._drop:
                stats = self._param_stats(entry)
                self.routes[entry.qualname] = stats.route
                self.weight_dot_routes[entry.qualname] = stats.weight_dot_route
                self._layer_stats.setdefault(entry.layer, []).append(stats)
                if entry.qualname.rpartition(".")[2] == "weight":
                    self._weight_only[entry.layer] = stats
        except Exception as error:  # noqa: BLE001 - never raise into training
            self._fail(entry.layer, error)
            entry.failed = True
        finally:
            entry.contributions = []
        if entry.failed:
            self._missing.setdefault(entry.layer, "a parameter of the layer failed")

    def _param_stats(self, entry: Entry) -> ParamStats:
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

    # ----------------------------------------------------------------- end of backward
    def collect(self, scale: float | Tensor, step: int | None = None) -> dict[str, LayerStats]:
        """Per-layer statistics of this backward in the per-sample-loss convention; clears.

        Feeds the coverage ledger with ``step`` (default: the step given to ``capture``).
        Called inside a running backward (the nested backward of a reentrant checkpoint), it
        returns {} and keeps the state for the outer backward's collect.
        """
        if graph_task() != -1:
            return {}
        step = self._step if step is None else step
        try:
            self._resolve()
            for use in self._uses:
                if not use.done and use.generation == self._generation:
                    self._evaluate(use)
            for entry in self._entries.values():
                if not entry.finished:
                    self._finish(entry)
            result = {}
            if not self._drop and self.batch_conflict is None:
                for layer in self._layer_order:
                    if layer not in self._missing and layer in self._layer_stats:
                        weight = self._weight_only.get(layer)
                        result[layer] = _combine(self._layer_stats[layer], scale, weight)
            self._note(step, result)
            return result
        except Exception as error:  # noqa: BLE001 - never raise into training
            self._fail("<collect>", error)
            return {}
        finally:
            self._last_collect = (self._generation, step)
            self._clear()

    def discard(self) -> None:
        """Drop what was captured in a forward that has no backward."""
        self._clear()

    def _clear(self) -> None:
        self._generation += 1
        self._batch_size: int | None = None
        self._resolved = False
        self._uses: list[Use] = []
        self._entries: dict[int, Entry] = {}
        self._layer_order: dict[str, None] = {}
        self._layer_stats: dict[str, list[ParamStats]] = {}
        self._weight_only: dict[str, ParamStats] = {}  # layer -> its "weight" parameter's stats
        self._missing: dict[str, str] = {}  # layer -> why it has no rows this backward
        self._methods: dict[str, str] = {}  # layer -> the method its kernel used
        self._uncaptured: set[int] = set()
        self._drop: str | None = None  # why this backward's values are all dropped
        self._task: int | None = None  # the autograd graph task of this backward
        self._retracted = False

    def _fail(self, name: str, error: BaseException) -> None:
        message = str(error).strip().splitlines()
        reason = f"{type(error).__name__}: {message[0] if message else ''}"
        self.failures.append((name, reason))
        self._disabled[name] = f"disabled after a kernel failure ({reason})"
        if not name.startswith("<"):
            self._missing[owner_layer(name)] = f"kernel failed ({reason})"


def _zero_stats(
    param: Tensor, batch: int, dtype: torch.dtype, config: EngineConfig
) -> ParamStats:
    zeros = param.new_zeros(batch, dtype=dtype)
    sketch = param.new_zeros(batch, config.sketch_dim**2, dtype=dtype)
    gram = param.new_zeros(batch, batch, dtype=dtype) if config.gram else None
    return ParamStats(zeros, zeros, sketch if config.sketch_dim else None, gram, "none", "none")


def _combine(stats: list[ParamStats], scale: float | Tensor, weight: ParamStats | None = None) -> LayerStats:
    """Sum a layer's parameter statistics and rescale: squares by scale^2, linear by scale."""
    square = scale * scale
    sketch = None if stats[0].sketch is None else sum(s.sketch for s in stats) * scale
    gram = None if stats[0].gram is None else sum(s.gram for s in stats) * square
    return LayerStats(
        norm2=sum(s.norm2 for s in stats) * square,
        weight_dot=sum(s.weight_dot for s in stats) * scale,
        sketch=sketch,
        gram=gram,
        weight_norm2=None if weight is None else weight.norm2 * square,
        weight_weight_dot=None if weight is None else weight.weight_dot * scale,
    )
