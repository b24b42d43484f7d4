"""The Recorder: one process's recording, from global hooks to shards.

Step boundaries. A step ends when an optimizer steps (post hook), or when a GradScaler
skips the optimizer's step. Backward calls before it are its micro-batches; backward
calls inside ``optimizer.step(closure)`` are closure evaluations (LBFGS): the loss and the
gradients of the first one are the step's. A script that never steps an optimizer but
changes its parameters in place between backward calls gets one step per backward.

Cadence. Loss, learning rates and times are recorded every step; per-layer and
per-sample statistics on steps where ``step % every == 0``.

Safety. Every callback runs under a Guard; failures disable the callback, warn once on
stderr, and go to events.jsonl and meta.json. Nothing is stored on user objects, no
random number is drawn, and values are copied to the host asynchronously.
"""

from __future__ import annotations

import math
import os
import sys
import time
import weakref
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.weak import WeakIdKeyDictionary

from gradscope.record import active, scalars
from gradscope.record.config import RecordConfig
from gradscope.record.epochs import EpochTracker
from gradscope.record.failures import FailureLog
from gradscope.record.hooks import Callbacks, GlobalHooks, Guard
from gradscope.record.names import ModuleNames
from gradscope.record.optim import hparams, optimizer_params
from gradscope.record.reduction import Reduction, detect_reduction, per_sample_factor
from gradscope.record.rows import MicroStats, StepRecord
from gradscope.record.tasks import TaskRecorder, TaskStats
from gradscope.record.writer import ShardWriter
from gradscope.store import meta as run_meta


@dataclass
class _Pending:
    """What has happened since the last step boundary."""

    losses: list[torch.Tensor] = field(default_factory=list)
    backward_calls: int = 0
    closure: bool = False
    reduction: Reduction | None = None
    loss_scale: torch.Tensor | None = None
    per_sample_factor: Any = None  # float or 0-dim tensor (divided by the loss scale)
    batch_size: int = 0
    micro_stats: list[MicroStats] = field(default_factory=list)
    sum_norm2: dict[int, torch.Tensor] = field(default_factory=dict)  # id(param) -> value
    manual: dict[str, Any] | None = None  # no-optimizer bookkeeping
    pre: dict[str, Any] | None = None  # optimizer pre-hook values
    groups: torch.Tensor | None = None
    task_stats: list[TaskStats] = field(default_factory=list)  # one per gradscope.tasks() call


class Recorder(Callbacks):
    """Record training into ``run_dir``.

    >>> with gradscope.Recorder(model, optimizer, run_dir="runs/exp1") as rec:  # doctest: +SKIP
    ...     train()

    With no model and no optimizer (as ``gradscope record`` uses it) every module that
    runs and every optimizer that steps in the process is recorded.
    """

    def __init__(
        self,
        model: torch.nn.Module | None = None,
        optimizer: torch.optim.Optimizer | list[torch.optim.Optimizer] | None = None,
        *,
        run_dir: str | os.PathLike[str] = "runs/gradscope",
        every: int = 1,
        profile: str = "standard",
        sketch: int = 4,
        reduction: str = "auto",
        batch_dim: int | None = None,
        config: RecordConfig | None = None,
        owns_meta: bool = True,
        force: bool = False,
    ) -> None:
        self.config = config or RecordConfig.from_options(
            profile=profile, every=every, sketch=sketch, reduction=reduction, batch_dim=batch_dim
        )
        self.run_dir = Path(run_dir)
        self.rank = int(os.environ.get("RANK", "0"))
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self._owns_meta = owns_meta
        self._force = force
        self._names = ModuleNames()
        self._explicit_model = model is not None
        if model is not None:
            self._names.add_root(model)
        optimizers = optimizer if isinstance(optimizer, list) else [optimizer] if optimizer else []
        self._only_optimizers = weakref.WeakSet(optimizers) if optimizers else None
        self._optimizer_index: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._initial = WeakIdKeyDictionary()
        self._has_params: weakref.WeakKeyDictionary[torch.nn.Module, bool] = (
            weakref.WeakKeyDictionary()
        )
        self._guard = Guard(self._report_failure)
        self._hooks = GlobalHooks(self, self._guard)
        self._engine = self._make_engine()
        # Always on: tasks() is opt-in, and its Grams need no per-sample engine (the engine,
        # when there is one, adds per-sample cross-task conflict for [B] losses).
        self._tasks: TaskRecorder | None = TaskRecorder()
        self._writer: ShardWriter | None = None
        self._pending = _Pending()
        self._stepping: Any = None
        self._optimizer_seen = False
        self.step = 0
        self.steps_emitted = 0
        self._start = time.perf_counter()
        self._last_step_end = math.nan
        self._own_time = 0.0
        self._failures = FailureLog(self.run_dir, self.rank)
        self._layers_dirty = model is not None
        self._last_module: weakref.ref[torch.nn.Module] | None = None
        self._epochs = EpochTracker()
        self._head: str | None = None
        self._layer_table: list[dict[str, Any]] = []
        self._active = False

    # lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Recorder:
        self.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(status="crashed" if exc_type else "finished")

    def start(self) -> None:
        if self._owns_meta and self.rank == 0:
            run_meta.claim_run_dir(self.run_dir, self._force)  # GradscopeError before training
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                payload = run_meta.new_meta(sys.argv, asdict(self.config))
                run_meta.write_json_atomic(self.run_dir / run_meta.META_FILE, payload)
            except OSError as err:
                self._report_failure("run directory", err)
                return
        self._hooks.install()
        self._active = True
        active.push(self)

    def close(self, status: str | None = None) -> None:
        """Remove the hooks, finish a pending hand-updated step, flush, update meta.json."""
        if not self._active:
            return
        self._guard("backward_begin", self._close_manual_step)()
        self._hooks.remove()
        self._active = False
        active.pop(self)
        self._guard("writer", self._close_writer)()
        self._guard("meta.json", self._write_meta)(final=True, status=status if self._owns_meta else None)

    def _close_writer(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        for table, lost in self._writer.unwritten().items():
            what = f"{lost['rows']} rows of {table}" if "rows" in lost else f"{lost['batches']} steps' values"
            self._warn("writer", f"{what} not written: {lost['reason']}")

    # failure handling ------------------------------------------------------------------

    def _report_failure(self, component: str, err: BaseException | str) -> None:
        self._failures.failed(component, err, self.step)

    def _warn(self, component: str, message: str) -> None:
        self._failures.warn(component, message, self.step)

    # engine and writer -------------------------------------------------------------------

    def _make_engine(self) -> Any:
        if not self.config.per_sample:
            return None
        from gradscope.record.engine import EngineConfig, PerSampleEngine

        return PerSampleEngine(
            EngineConfig(
                gram=self.config.gram,
                sketch_dim=self.config.sketch,
                seed=self.config.seed,
                batch_dim=self.config.batch_dim,
            )
        )

    def _ensure_writer(self) -> ShardWriter:
        if self._writer is None:
            self._writer = ShardWriter(
                self.run_dir, self.rank, on_error=lambda msg: self._report_failure("writer", msg)
            )
        return self._writer

    def _recorded(self) -> bool:
        return self.step % self.config.every == 0

    # epochs ------------------------------------------------------------------------------

    def loader_started(self, loader: Any) -> None:
        self._epochs.loader_started(loader, self.step)

    # one-line API ----------------------------------------------------------------------

    def set_groups(self, labels: Any) -> None:
        """Group labels for the samples of the next backward (kept until replaced)."""
        self._guard("groups", self._set_groups)(labels)

    def _set_groups(self, labels: Any) -> None:
        self._pending.groups = torch.as_tensor(labels).detach().reshape(-1).to(torch.int64)

    def set_tasks(self, losses: dict[str, Any]) -> None:
        self._guard("tasks", self._set_tasks)(losses)

    def _set_tasks(self, losses: dict[str, Any]) -> None:
        pending = self._pending
        if self._tasks is None or not self._recorded() or not torch.is_grad_enabled():
            return
        if pending.closure and pending.backward_calls:  # later closure evaluations (LBFGS)
            return
        started = time.perf_counter()
        stats = self._tasks.record(losses, self)
        if stats is not None:
            pending.task_stats.append(stats)
        self._own_time += time.perf_counter() - started

    # forward -------------------------------------------------------------------------

    def forward_pre(self, module: torch.nn.Module, args: tuple) -> None:
        if not self._explicit_model and self._names.module(module) is None:
            self._layers_dirty |= self._names.add_root(module)

    def forward(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        engine = self._engine
        if engine is None or engine.suspended or engine.replaying or not torch.is_grad_enabled():
            return
        if not self._recorded() or (self._pending.closure and self._pending.backward_calls):
            return
        has_params = self._has_params.get(module)
        if has_params is None:
            has_params = any(p.requires_grad for p in module.parameters(recurse=False))
            self._has_params[module] = has_params
        name = self._names.module(module) if has_params else None
        if name is not None:
            self._last_module = weakref.ref(module)  # the output head, once the forward ends
            self._engine.capture(name, module, args, kwargs, output)

    # backward ------------------------------------------------------------------------

    def backward_begin(self, tensors: Any) -> None:
        started = time.perf_counter()
        root = tensors[0] if isinstance(tensors, (tuple, list)) and tensors else tensors
        if not isinstance(root, torch.Tensor):
            return
        self._close_manual_step()
        pending = self._pending
        pending.backward_calls += 1
        if self._stepping is not None:
            pending.closure = True
        if pending.closure and pending.backward_calls > 1:
            self._own_time += time.perf_counter() - started
            return
        if root.dim() == 0:
            pending.losses.append(root.detach())
            pending.reduction = detect_reduction(root)
        self._own_time += time.perf_counter() - started

    def backward_end(self) -> None:
        started = time.perf_counter()
        pending = self._pending
        first_closure_call = pending.closure and pending.backward_calls == 1
        recorded = self._recorded() and (not pending.closure or first_closure_call)
        params = self._names.parameters() if recorded or not self._optimizer_seen else []
        if recorded:
            self._collect_per_sample()
            factor = pending.per_sample_factor
            if factor is not None:
                for param, value in zip(params, scalars.grad_norms(params)):
                    pending.sum_norm2[id(param)] = value**2 * factor**2
            if first_closure_call and pending.pre is not None:
                pending.pre["grad_norm"] = scalars.grad_norms(pending.pre["params"])
        if not self._optimizer_seen:
            self._prepare_manual_step(params, full=recorded)
        self._own_time += time.perf_counter() - started

    def _collect_per_sample(self) -> None:
        if self._engine is None:
            return
        stats = self._engine.collect(1.0)
        self._report_engine_failures()
        if self._engine.batch_conflict is not None:
            self._switch_batch_dim()
            return  # this backward's per-sample values used the wrong batch dimension
        if not stats:
            return
        pending = self._pending
        batch_size = next(iter(stats.values())).norm2.shape[0]
        reduction = pending.reduction or Reduction("mean", 1.0, False)
        factor: Any = per_sample_factor(reduction, batch_size, self.config.reduction)
        if pending.loss_scale is not None:
            factor = factor / pending.loss_scale
        pending.per_sample_factor = factor
        pending.batch_size += batch_size
        layers = list(stats)
        pending.micro_stats.append(
            MicroStats(
                micro=len(pending.micro_stats),
                layers=layers,
                norm2=[stats[n].norm2 * factor**2 for n in layers],
                weight_dot=[stats[n].weight_dot * factor for n in layers],
                sketch=[None if stats[n].sketch is None else stats[n].sketch * factor for n in layers],
                gram=[None if stats[n].gram is None else stats[n].gram * factor**2 for n in layers],
                groups=pending.groups,
            )
        )

    def _switch_batch_dim(self) -> None:
        """A module declaring ``batch_first`` saw another batch size than dim 0 of earlier
        layers: the model is sequence-first. Use that module's batch dim from now on."""
        layer, dim, size, inferred = self._engine.batch_conflict
        self._engine.batch_conflict = None
        self._engine.config = replace(self._engine.config, batch_dim=dim)
        self._warn("batch dimension", f"{layer} declares batch_first=False and sees batch {size} at dim "
                   f"{dim}, not {inferred} at dim 0: a sequence-first model; per-sample statistics use "
                   f"batch dim {dim} from the next recorded step (this step's were dropped; "
                   f"--batch-dim {dim} avoids this)")

    def _report_engine_failures(self) -> None:
        failures = getattr(self._engine, "failures", None)
        while failures:
            layer, reason = failures.pop(0)
            self._warn(f"per-sample kernel for {layer}", f"per-sample statistics for {layer} "
                       f"disabled ({reason}); training continues")

    # hand-written updates (no optimizer) -----------------------------------------------

    def _prepare_manual_step(self, params: list[torch.Tensor], full: bool) -> None:
        manual: dict[str, Any] = {"params": params, "versions": [p._version for p in params]}
        if full:
            manual.update(
                grad_norm=scalars.grad_norms(params),
                weight_norm=scalars.norms(params),
                before=scalars.snapshot(params),
            )
        self._pending.manual = manual

    def _close_manual_step(self) -> None:
        """Before a backward (or at close): if weights changed in place since the last
        backward and no optimizer ever stepped, that backward was a hand-written step."""
        manual = self._pending.manual
        if self._optimizer_seen or manual is None:
            return
        params = manual["params"]
        if all(p._version == v for p, v in zip(params, manual["versions"])):
            return  # nothing changed yet: still accumulating
        per_param = {}
        if "before" in manual:
            per_param = {
                "grad_norm": manual["grad_norm"],
                "weight_norm": manual["weight_norm"],
                "update_norm": scalars.distances(params, manual["before"]),
                "init_distance": self._init_distance(params, manual["before"]),
            }
        self._emit(optimizer=None, params=params, per_param=per_param, skipped=False)

    # optimizer steps -------------------------------------------------------------------

    def _tracked(self, optimizer: Any) -> bool:
        return self._only_optimizers is None or optimizer in self._only_optimizers

    def step_pre(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if not self._tracked(optimizer):
            return
        started = time.perf_counter()
        self._optimizer_seen = True
        self._stepping = optimizer
        pending = self._pending
        pending.manual = None
        # args are step()'s own, optimizer first: step(closure) or step(closure=...)
        pending.closure = (len(args) > 1 and args[1] is not None) or kwargs.get("closure") is not None
        if self._recorded():
            params = optimizer_params(optimizer)
            pending.pre = {
                "params": params,
                "weight_norm": scalars.norms(params),
                "before": scalars.snapshot(params),
                "grad_norm": None if pending.closure else scalars.grad_norms(params),
            }
            pending.pre["init_distance"] = self._init_distance(params, pending.pre["before"])
        self._own_time += time.perf_counter() - started

    def step_post(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if optimizer is not self._stepping:
            return
        started = time.perf_counter()
        self._stepping = None
        pre = self._pending.pre
        per_param: dict[str, torch.Tensor] = {}
        params = optimizer_params(optimizer)
        if pre is not None:
            per_param = {
                "weight_norm": pre["weight_norm"],
                "update_norm": scalars.distances(pre["params"], pre["before"]),
                "init_distance": pre["init_distance"],
            }
            if pre["grad_norm"] is not None:
                per_param["grad_norm"] = pre["grad_norm"]
            params = pre["params"]
        self._own_time += time.perf_counter() - started
        self._emit(optimizer=optimizer, params=params, per_param=per_param, skipped=False)

    def scaler_scaled(self, scaler: Any) -> None:
        scale = getattr(scaler, "_scale", None)
        if isinstance(scale, torch.Tensor) and scaler.is_enabled():
            self._pending.loss_scale = scale.detach().clone().reshape(())

    def scaler_stepped(self, scaler: Any, optimizer: torch.optim.Optimizer, stepped: bool) -> None:
        """GradScaler.step returned without the optimizer stepping: a skipped step."""
        if stepped or not self._tracked(optimizer):
            return
        self._optimizer_seen = True
        self._pending.micro_stats = []  # inf/nan gradients: no per-sample statistics
        self._emit(optimizer=optimizer, params=[], per_param={}, skipped=True)

    # emission ----------------------------------------------------------------------------

    def _init_distance(self, params: list[torch.Tensor], before: list[torch.Tensor]) -> torch.Tensor:
        """||W_before - W_0|| per parameter; W_0 is the first snapshot seen (kept on the host)."""
        initial = []
        for param, value in zip(params, before):
            if param not in self._initial:
                self._initial[param] = value.detach().to("cpu", copy=True)
            initial.append(self._initial[param])
        return scalars.distances(before, initial)

    def _emit(
        self, optimizer: Any, params: list[torch.Tensor], per_param: dict[str, torch.Tensor],
        skipped: bool,
    ) -> None:
        started = time.perf_counter()
        pending = self._pending
        recorded = self._recorded() and not skipped and bool(per_param)
        if recorded and pending.sum_norm2 and params:
            nan = torch.full((), math.nan, dtype=torch.float64, device=params[0].device)
            per_param["sum_norm2"] = torch.stack(
                [pending.sum_norm2.get(id(p), nan).to(nan.device) for p in params]
            )
        now = time.perf_counter() - self._start
        record = StepRecord(
            step=self.step,
            rank=self.rank,
            optimizer=-1 if optimizer is None else self._index_of(optimizer),
            wall_time=now,
            step_time=now - self._last_step_end,
            recorder_time=self._own_time + (time.perf_counter() - started),
            backward_calls=pending.backward_calls,
            skipped=skipped,
            recorded=recorded,
            hparams=hparams(optimizer),
            losses=pending.losses,
            loss_scale=pending.loss_scale,
            per_sample_scale=_scale_value(pending.per_sample_factor),
            batch_size=pending.batch_size if pending.micro_stats else -1,
            params=[self._names.param(p) for p in params] if recorded else [],
            per_param=per_param if recorded else {},
            micro_stats=pending.micro_stats if recorded else [],
            task_stats=pending.task_stats if recorded else [],
        )
        self._ensure_writer().put(record.start_copy())
        head = self._head_layer()
        if self._layers_dirty or head != self._head:
            self._layers_dirty, self._head = False, head
            self._layer_table = self._names.layer_table(self._coverage)
            self._write_meta(final=False)
        self._last_step_end = now
        self._own_time = 0.0
        groups = pending.groups
        self._pending = _Pending(groups=groups)
        self._epochs.step_taken()
        self.step += 1
        self.steps_emitted += 1

    def _head_layer(self) -> str | None:
        """The layer of the last module with parameters that ran in the forward pass: the
        output head (a tied head's weight is reported under the layer that owns it)."""
        module = self._last_module() if self._last_module is not None else None
        param = next(module.parameters(recurse=False), None) if module is not None else None
        return self._head if param is None else self._names.param(param)[0]

    def _index_of(self, optimizer: Any) -> int:
        if optimizer not in self._optimizer_index:
            self._optimizer_index[optimizer] = len(self._optimizer_index)
        return self._optimizer_index[optimizer]

    def _write_meta(self, final: bool, status: str | None = None) -> None:
        # A process that saw no training (torchrun's launcher, a DataLoader worker) writes nothing.
        saw_nothing = not self.steps_emitted and not self._failures.entries and status is None
        if self.rank != 0 or saw_nothing:
            return
        if self._names.roots():  # the model may be gone by the time the process exits
            self._layer_table = self._names.layer_table(self._coverage)
        fields: dict[str, Any] = {
            "head": self._head,
            "epoch_starts": self._epochs.starts,
            "torch_version": torch.__version__,
            "world_size": self.world_size,
            "layers": self._layer_table,
            "steps": self.step,
        }
        if final:
            fields["failures"] = self._failures.entries
            fields["unwritten"] = self._writer.unwritten() if self._writer is not None else {}
            if status is not None:
                fields.update(status=status, ended=run_meta.now_iso())
        try:
            run_meta.update_meta(self.run_dir, **fields)
        except (OSError, ValueError) as err:
            if not getattr(self, "_meta_failed", False):  # once: it never raises into training
                self._meta_failed = True
                self._report_failure("meta.json", err)

    def _coverage(self, module: torch.nn.Module) -> Any:
        if self._engine is None:
            from gradscope.record.engine import Coverage

            return Coverage(method="none", covered=False, reason="profile minimal: no per-sample")
        return self._engine.coverage(module)


def _scale_value(value: Any) -> float | torch.Tensor:
    """A float, or a 0-dim tensor read later in the writer thread (never synced here)."""
    if value is None:
        return math.nan
    return value.detach() if isinstance(value, torch.Tensor) else float(value)
