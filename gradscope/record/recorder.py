"""The Recorder: one process's recording, from global hooks to shards.

Step boundaries are decided by ``steps.StepMachine`` (the rules are documented there);
this class wires the global hooks to it and measures: losses (unscaled when a GradScaler
scaled them), per-parameter scalars, and per-sample contributions to the gradient the
optimizer sees (``reduction`` says what factor turns them into per-sample-loss gradients).
Statistics run under their own guard: a failing statistic is dropped, never a step.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from gradscope.record import active, persample, scalars
from gradscope.record.config import RecordConfig
from gradscope.record.coverage import NOT_STEPPED
from gradscope.record.distributed import Distributed
from gradscope.record.epochs import EpochTracker
from gradscope.record.failures import FailureLog
from gradscope.record.hooks import Callbacks, GlobalHooks, Guard
from gradscope.record.losses import BackwardLoss, Scaled, loss_of, undivided
from gradscope.record.manual import ManualStep
from gradscope.record.names import ModuleNames, is_compiled
from gradscope.record.optim import InitialWeights, after_step, before_step, hparams, optimizer_params
from gradscope.record.probes import make_probes
from gradscope.record.rank_claim import claim_rank_folder, process_rank
from gradscope.record.reduction import step_factor
from gradscope.record.rows import MicroStats, StepRecord
from gradscope.record.runcard import RunCard
from gradscope.record.sample_index import LoaderIndices, SampleLabels
from gradscope.record.sample_loss import graph_losses
from gradscope.record.steps import Backward, StepEnd, StepMachine
from gradscope.record.tasks import TaskRecorder, TaskStats
from gradscope.record.writer import ShardWriter
from gradscope.store import meta as run_meta


@dataclass
class _Pending:
    """What has happened since the last step boundary."""

    losses: list[torch.Tensor] = field(default_factory=list)
    loss_scale: torch.Tensor | None = None
    factors: list[tuple[float, Any]] = field(default_factory=list)  # (f, source) per micro-batch
    batch_size: int = 0
    micro_stats: list[MicroStats] = field(default_factory=list)
    sum_norm2: dict[int, torch.Tensor] = field(default_factory=dict)  # id(param) -> |grad|^2
    local_norm2: dict[int, torch.Tensor] = field(default_factory=dict)  # DDP: before the all-reduce
    manual: ManualStep | None = None  # no-optimizer bookkeeping of the last backward
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
        self._initial = InitialWeights()
        self._has_params: weakref.WeakKeyDictionary[torch.nn.Module, bool] = (
            weakref.WeakKeyDictionary()
        )
        self._guard = Guard(self._report_failure)
        self._measure = Guard(self._report_failure)  # statistics: a failure drops only that one
        self._hooks = GlobalHooks(self, self._guard)
        self._engine = persample.make_engine(self.config)
        # Always on: tasks() is opt-in, and its Grams need no per-sample engine (the engine,
        # when there is one, adds per-sample cross-task conflict for [B] losses).
        self._tasks: TaskRecorder | None = TaskRecorder()
        self._writer: ShardWriter | None = None
        self._pending = _Pending()
        self._steps = StepMachine()
        self._probes = make_probes(self.config, self._names, self._steps, self._engine, self._measure,
                                   self._warn)
        self._stepping: Any = None  # the optimizer whose step() runs
        self._loss: BackwardLoss | None = None
        self._scaled: Scaled | None = None  # the last scaler.scale() call
        self.steps_emitted = 0
        self._start = time.perf_counter()
        self._last_step_end = math.nan
        self._own_time = 0.0
        self._failures = FailureLog(self.run_dir, self.rank)
        self._card = RunCard(self.run_dir, self._names, self._engine, dirty=model is not None)
        self._epochs = EpochTracker()
        self._dist = Distributed()
        self._rank_warned = False
        self.loss_divisor: int | None = None  # see losses.undivided
        self._labels = SampleLabels(LoaderIndices(self._guard))  # SAMPLES.loss and .index
        self._active = False

    @property
    def step(self) -> int:
        return self._steps.step

    # lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Recorder:
        self.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(status="crashed" if exc_type else "finished")

    def start(self) -> None:
        self._sync_rank()
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
        self._guard("probes", self._probes.install)()
        self._labels.loader.install()
        self._active = True
        active.push(self)

    def close(self, status: str | None = None) -> None:
        """Remove the hooks, finish a pending hand-updated step, flush, update meta.json."""
        if not self._active:
            return
        self._guard("close", self._close_steps)()
        self._hooks.remove()
        self._probes.remove()
        self._labels.loader.remove()
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

    def _sync_rank(self) -> None:
        """The rank from torch.distributed once its group is up (rank_claim); fixed at the first shard."""
        rank, self.world_size = process_rank(self.rank, self.world_size)
        if self._writer is None:
            self.rank = self._failures.rank = rank
        elif rank != self.rank and not self._rank_warned:
            self._rank_warned = True
            self._warn("rank", f"steps before init_process_group were recorded as rank {self.rank}; "
                       f"torch.distributed says rank {rank}: the rank column keeps {self.rank}")

    def _ensure_writer(self) -> ShardWriter:
        if self._writer is None:
            folder, clash = claim_rank_folder(self.run_dir, self.rank)
            on_error = lambda msg: self._report_failure("writer", msg)  # noqa: E731
            self._writer = ShardWriter(self.run_dir, self.rank, on_error=on_error, folder=folder)
            if clash:
                self._warn("rank", clash)
        return self._writer

    def _recorded(self, step: int | None = None) -> bool:
        return (self.step if step is None else step) % self.config.every == 0

    # epochs ------------------------------------------------------------------------------

    def loader_started(self, loader: Any) -> None:
        self._epochs.loader_started(loader, self.step)

    # one-line API ----------------------------------------------------------------------

    def set_groups(self, labels: Any) -> None:
        """Group labels for the samples of the next backward (kept until replaced)."""
        self._guard("groups", self._set_groups)(labels)

    def _set_groups(self, labels: Any) -> None:
        self._pending.groups = torch.as_tensor(labels).detach().reshape(-1).to(torch.int64)

    def declare(self, kind: str, values: Any) -> None:
        """Per-sample losses (kind "loss") or dataset indices ("index") of the next backward."""
        self._guard(f"gradscope.{kind}", self._labels.declare)(kind, values)

    def set_tasks(self, losses: dict[str, Any]) -> None:
        self._guard("tasks", self._set_tasks)(losses)

    def _set_tasks(self, losses: dict[str, Any]) -> None:
        pending = self._pending
        if self._tasks is None or not self._recorded(self._steps.upcoming) or not torch.is_grad_enabled():
            return
        if not self._steps.capturing:  # later closure evaluations (LBFGS)
            return
        started = time.perf_counter()
        stats = self._tasks.record(losses, self)
        if stats is not None:
            pending.task_stats.append(stats)
        self._own_time += time.perf_counter() - started

    # forward -------------------------------------------------------------------------

    def forward_pre(self, module: torch.nn.Module, args: tuple) -> None:
        self._dist.module_seen(module)
        if not self._explicit_model and self._names.module(module) is None:
            self._card.layers_dirty |= self._names.add_running(module)
        if self._engine is not None and is_compiled(module):
            self._card.layers_dirty |= self._engine.mark_compiled(module, self._names, self.step)
        self._probes.forward_pre(module)

    def forward(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        self._probes.forward(module, args, kwargs, output)
        engine = self._engine
        if engine is None or engine.suspended or engine.replaying or not torch.is_grad_enabled():
            return
        if not self._recorded(self._steps.upcoming) or not self._steps.capturing or self._probes.busy:
            return
        has_params = self._has_params.get(module)
        if has_params is None:
            has_params = any(p.requires_grad for p in module.parameters(recurse=False))
            self._has_params[module] = has_params
        name = self._names.module(module) if has_params else None
        if name is not None:
            self._card.module_ran(module)
            self._engine.capture(name, module, args, kwargs, output, step=self.step)

    # backward ------------------------------------------------------------------------

    def backward_begin(self, tensors: Any, grad_tensors: Any = None) -> None:
        started = time.perf_counter()
        began = self._steps.backward_began(self._accumulating)
        if began.closed is not None:
            self._close_manual_step(began.closed)
        scaled, self._scaled = self._scaled, None
        self._labels.backward_began()
        per_sample = self._engine is not None and self._recorded()
        read = self._measure("per-sample loss", graph_losses) if per_sample else None
        self._loss = loss_of(tensors, grad_tensors, scaled, read) if began.backward.record else None
        if self._dist.active and began.backward.record and self._recorded():
            self._measure("local gradients", self._dist.arm)()
        if self._engine is not None:
            scale = None if self._loss is None else self._loss.scale
            self._engine.grad_scale = None if scale is None else scale.reciprocal()
        self._own_time += time.perf_counter() - started

    def _accumulating(self) -> bool:
        manual = self._pending.manual
        return manual is not None and manual.accumulating()

    def backward_end(self) -> None:
        started = time.perf_counter()
        backward = self._steps.backward_ended()
        loss, self._loss = self._loss, None
        local = self._dist.disarm() if self._dist.active else {}
        if not backward.record:
            if self._engine is not None:
                self._engine.discard()
            self._own_time += time.perf_counter() - started
            return
        pending = self._pending
        if loss is not None and loss.value is not None:
            pending.losses.append(loss.value)
        if loss is not None and loss.scale is not None:
            pending.loss_scale = loss.scale
        recorded = self._recorded()
        if not recorded and self._engine is not None:
            self._engine.discard()
        scale = None if loss is None else loss.scale
        params = self._names.parameters() if recorded or not self._steps.optimizer_seen else []
        if recorded:
            self._collect_per_sample(backward, loss)
            self._measure("sum_norm2", self._sum_norm2)(params, scale, local)
            if backward.closure_eval == 1 and pending.pre is not None:
                grad_norms = self._measure("grad norms", scalars.grad_norms)
                pending.pre["grad_norm"] = grad_norms(pending.pre["params"])
        if not self._steps.optimizer_seen:
            pending.manual = ManualStep(params, self._measure if recorded else None, self._initial)
        self._own_time += time.perf_counter() - started

    def backward_raised(self, error: BaseException) -> None:
        """The backward raised (and the script may catch it): drop its loss and per-sample
        state so they never mix into the next backward's."""
        self._steps.backward_raised()
        self._loss = None
        self._dist.disarm()
        if self._engine is not None:
            self._engine.discard()
        if self._steps.raised_total == 1:
            first = (str(error).strip().splitlines() or [""])[0]
            self._warn("backward", f"a backward call raised ({type(error).__name__}: {first}); its loss and "
                       "per-sample values were dropped and it is not counted as a micro-batch")

    def _collect_per_sample(self, backward: Backward, loss: BackwardLoss | None) -> None:
        if self._engine is None:
            return
        pending = self._pending
        collected = persample.collect(
            self._engine, self.step, backward.micro, loss, self.config.reduction, pending.groups, self._warn
        )
        dropped = self._engine.take_step_drop()
        if dropped is not None:  # e.g. a second backward through a retained graph
            pending.micro_stats, pending.factors, pending.batch_size = [], [], 0
            self._warn("per-sample", f"step {self.step}: per-sample values dropped ({dropped})")
        elif collected is not None:
            pending.micro_stats.append(collected.stats)
            pending.factors.append(collected.factor)
            pending.batch_size += collected.batch_size
            graph = loss.per_sample if loss else None
            self._measure("sample labels", self._labels.attach)(collected.stats, collected.batch_size, graph)

    def _sum_norm2(self, params: list[torch.Tensor], scale: torch.Tensor | None, local: dict) -> None:
        """|p.grad|^2 (unscaled) after the backward: |sum_i c_i|^2 over the step so far (under
        DDP the all-reduced gradient; ``local``: the rank's own, before the all-reduce)."""
        norms = scalars.grad_norms(params)
        if scale is not None:
            norms = norms / scale.to(norms.device, torch.float64)
        for param, value in zip(params, norms):
            self._pending.sum_norm2[id(param)] = value**2
        for key, value in local.items():  # a param without a gradient now keeps its earlier value
            unscale = 1.0 if scale is None else scale.to(value.device, torch.float64) ** -2
            self._pending.local_norm2[key] = value * unscale

    # hand-written updates (no optimizer) -----------------------------------------------

    def _close_manual_step(self, end: StepEnd) -> None:
        """The last backward was a hand-written step: weights and updates from snapshots."""
        manual = self._pending.manual
        params = manual.params if manual is not None else []
        per_param: dict[str, torch.Tensor] = {}
        if manual is not None and manual.pre is not None:
            per_param = after_step(manual.pre, self._measure)
        self._emit(end, optimizer=None, params=params, per_param=per_param)

    def _close_steps(self) -> None:
        end = self._steps.close()
        if end is not None:
            self._close_manual_step(end)
        elif self._engine is not None and self._pending.micro_stats:
            # backward passes after the last optimizer step (a saliency map, a tail of
            # accumulation micro-batches): no step took them, so their rows are not written
            self._engine.ledger.retract(self.step, None)
        if self._steps.raised_total > 1:
            total = self._steps.raised_total
            self._warn("backward", f"{total} backward calls raised in all; each was dropped")

    # optimizer steps -------------------------------------------------------------------

    def _tracked(self, optimizer: Any) -> bool:
        return self._only_optimizers is None or optimizer in self._only_optimizers

    def optimizer_created(self, optimizer: torch.optim.Optimizer) -> None:
        if self._tracked(optimizer):
            self._steps.optimizer_created()

    def step_pre(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if not self._tracked(optimizer):
            return
        started = time.perf_counter()
        self._stepping = optimizer
        pending = self._pending
        pending.manual = None
        # args are step()'s own, optimizer first: step(closure) or step(closure=...)
        closure = (len(args) > 1 and args[1] is not None) or kwargs.get("closure") is not None
        self._steps.optimizer_pre(closure)
        pending.pre = None
        self._probes.step_pre(optimizer, self.step)
        if self._recorded():
            pending.pre = before_step(optimizer_params(optimizer), self._measure, self._initial, closure)
        self._own_time += time.perf_counter() - started

    def step_post(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if optimizer is not self._stepping:
            return
        started = time.perf_counter()
        self._stepping = None
        end = self._steps.optimizer_post()
        pre = self._pending.pre
        per_param: dict[str, torch.Tensor] = {}
        params = optimizer_params(optimizer)
        if pre is not None:
            per_param, params = after_step(pre, self._measure), pre["params"]
        self._measure("per-sample rows", self._keep_stepped_layers)(end.step, params)
        self._own_time += time.perf_counter() - started
        self._emit(end, optimizer=optimizer, params=params, per_param=per_param)

    def _keep_stepped_layers(self, step: int, stepped: list[torch.Tensor]) -> None:
        """Drop per-sample rows of layers none of whose parameters the stepping optimizer
        holds (a GAN's discriminator at the generator's step): they are contributions to a
        gradient no optimizer used at this step."""
        pending = self._pending
        if not pending.micro_stats:  # most steps of most runs: nothing to sort out
            return
        held = {id(p) for p in stepped}
        inside = {self._names.param(p)[0] for p in stepped}
        outside = {self._names.param(p)[0] for p in self._names.parameters() if id(p) not in held}
        dropped = outside - inside
        if not dropped or not any(set(m.layers) & dropped for m in pending.micro_stats):
            return
        pending.micro_stats = [persample.without_layers(m, dropped) for m in pending.micro_stats]
        if self._engine is not None:
            self._engine.drop_step(step, NOT_STEPPED, dropped)

    def scaler_scaled(self, scaler: Any, outputs: Any, scaled: Any) -> None:
        """Keep the scale read when ``scaler.scale()`` ran, and which tensor it scaled."""
        self._scaled = Scaled.of(scaler, outputs, scaled)

    def scaler_stepped(self, scaler: Any, optimizer: torch.optim.Optimizer, stepped: bool) -> None:
        """GradScaler.step returned without the optimizer stepping: a skipped step."""
        if stepped or not self._tracked(optimizer):
            return
        self._stepping = None
        end = self._steps.scaler_skipped()
        self._pending.micro_stats, self._pending.factors = [], []  # inf/nan gradients: no per-sample values
        if self._engine is not None:
            self._engine.drop_step(end.step, "GradScaler skipped the step (inf/nan gradients)")
        self._emit(end, optimizer=optimizer, params=[], per_param={})

    # emission ----------------------------------------------------------------------------

    def _emit(
        self, end: StepEnd, optimizer: Any, params: list[torch.Tensor], per_param: dict[str, torch.Tensor]
    ) -> None:
        started = time.perf_counter()
        self._sync_rank()
        pending = self._pending
        recorded = self._recorded(end.step) and not end.skipped and bool(per_param)
        for name, values in (("sum_norm2", pending.sum_norm2), ("local_norm2", pending.local_norm2)):
            if recorded and values and params:
                nan = torch.full((), math.nan, dtype=torch.float64, device=params[0].device)
                per_param[name] = torch.stack([values.get(id(p), nan).to(nan.device) for p in params])
        now = time.perf_counter() - self._start
        scale, source = step_factor(pending.factors)
        record = StepRecord(
            step=end.step,
            rank=self.rank,
            optimizer=-1 if optimizer is None else self._index_of(optimizer),
            wall_time=now,
            step_time=now - self._last_step_end,
            recorder_time=self._own_time + (time.perf_counter() - started),
            backward_calls=end.backward_calls,
            skipped=end.skipped,
            recorded=recorded,
            hparams=hparams(optimizer),
            losses=undivided(pending.losses, self.loss_divisor),
            loss_scale=pending.loss_scale,
            per_sample_scale=scale,
            per_sample_scale_source=source,
            batch_size=pending.batch_size if pending.micro_stats else -1,
            params=[self._names.param(p) for p in params] if recorded else [],
            per_param=per_param if recorded else {},
            micro_stats=pending.micro_stats if recorded else [],
            task_stats=pending.task_stats if recorded else [],
        )
        self._ensure_writer().put(record.start_copy())
        probe_rows = self._probes.rows(end.step, self.rank, not end.skipped)
        if probe_rows is not None:
            self._ensure_writer().put(probe_rows)
        # Counted before meta.json is written: _write_meta skips a process with 0 steps, and
        # the first step is the one that writes the layer table (issue 12).
        self.steps_emitted += 1
        if self._card.due():
            self._write_meta(final=False)
        self._last_step_end = now
        self._own_time = 0.0
        groups = pending.groups
        self._pending = _Pending(groups=groups)
        self._epochs.step_taken()

    def _index_of(self, optimizer: Any) -> int:
        if optimizer not in self._optimizer_index:
            self._optimizer_index[optimizer] = len(self._optimizer_index)
        return self._optimizer_index[optimizer]

    def _write_meta(self, final: bool, status: str | None = None) -> None:
        # A process that saw no training (torchrun's launcher, a DataLoader worker) writes nothing.
        saw_nothing = not self.steps_emitted and not self._failures.entries and status is None
        if self.rank != 0 or saw_nothing:
            return
        fields: dict[str, Any] = {
            "epoch_starts": self._epochs.starts,
            "torch_version": torch.__version__,
            "world_size": self.world_size,
            "steps": self.step,
            "distributed": self._dist.card(),
            **self._labels.summary(),
        }
        if final:
            fields["failures"] = self._failures.entries
            fields["unwritten"] = self._writer.unwritten() if self._writer is not None else {}
            if status is not None:
                fields.update(status=status, ended=run_meta.now_iso())
        self._card.write(fields, self._report_failure)
