"""ProbeRecorder: the instability probes of one process, fed by the Recorder's global hooks.

Cheap probes (attention, output logits, activations) run on recorded steps (``every``)
when the profile is not minimal; curvature on steps where ``step % curvature == 0``. The
Recorder calls ``forward_pre`` / ``forward`` for every module call, ``step_pre`` before an
optimizer step and ``rows`` when the step is emitted; ``install`` wraps
F.scaled_dot_product_attention and the loss functions (never while torch.compile traces).
Every entry point runs under the Recorder's statistics guard: a probe that raises is
disabled with one warning, training goes on. Nothing is stored on the user's objects and
no random number is drawn from torch's streams.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from gradscope.record.probes import activations, attention, curvature, logits, replay
from gradscope.record.probes.accumulate import HEAD, StepValues, rows_later

LOSSES = ("cross_entropy", "nll_loss", "mse_loss", "binary_cross_entropy_with_logits")
UNMEASURED = ("no replayable loss on this step (curvature needs F.cross_entropy, F.nll_loss, F.mse_loss or "
              "F.binary_cross_entropy_with_logits applied to a reshape of the outermost module call's "
              "output, or returned by that call; docs/probes.md)")
ATTENTION_HOW = {"max_logit": "max"}
LOGITS_HOW = {"log_z_max": "max", "max_logit": "max", "gap_min": "min"}
ACTIVATION_HOW = {"max_abs": "max", "alive": "any"}


class ProbeRecorder:
    """See the module docstring. ``upcoming`` / ``capturing``: the Recorder's step state."""

    def __init__(self, names: Any, *, cheap: bool, every: int, curvature_every: int, seed: int,
                 upcoming: Callable[[], int], capturing: Callable[[], bool], quiet: Callable[[], bool],
                 guard: Any, warn: Callable[[str, str], None]) -> None:
        self._names, self._cheap, self._every, self._curvature = names, cheap, every, curvature_every
        self._seed, self._upcoming, self._capturing, self._warn = seed, upcoming, capturing, warn
        self._quiet = quiet
        self.busy = False
        self._values = StepValues()
        self._stack: list[nn.Module] = []
        self._inner: dict[int, tuple[Any, str, nn.Module]] = {}  # id(grad_fn) -> (node, name, module)
        self._outer: dict[int, tuple[Any, replay.Call]] = {}
        self._start: tuple | None = None
        self._head: tuple[str, nn.Module] | None = None
        self._loss: replay.LossCall | None = None
        self._in_forward: dict[int, Any] = {}  # id(grad_fn) -> grad_fn of losses computed inside a forward
        self._losses = 0  # replayable losses seen on the step (micro-batches): curvature is of the last
        self._due = False  # a forward ran on a step where curvature is due
        self._unmeasured = False  # the one warning for a due step without a replayable loss was given
        self._restore: list[tuple[str, Any]] = []
        # one name per part: a cheap probe that raises stops the cheap probes, not curvature
        self.forward_pre = guard("probe hooks", self._forward_pre)
        self.forward = guard("probe hooks", self._forward)
        self.step_pre = guard("probe hooks", self._step_pre)
        self._on_loss = guard("probe hooks", self._loss_called)
        self._on_loss_result = guard("curvature", self._loss_result)
        self.rows = guard("probe rows", self._rows)
        self._on_sdpa = guard("probes", self._sdpa)
        self._module_probes_of = guard("probes", self._module_probes)
        self._logits_of = guard("probes", self._logits_probe)
        self._nlm_of = guard("probes", self._nlm)
        self._remember = guard("curvature", self._remember_loss)
        self._curvature_step = guard("curvature", self._curvature_of)

    # which steps --------------------------------------------------------------------------

    def _live(self) -> bool:
        return not self.busy and not self._quiet() and torch.is_grad_enabled() and self._capturing() \
            and not torch.compiler.is_compiling()

    def _cheap_now(self) -> bool:
        return self._cheap and self._upcoming() % self._every == 0 and self._live()

    def _curvature_now(self) -> bool:
        return bool(self._curvature) and self._upcoming() % self._curvature == 0 and self._live()

    # wrappers -----------------------------------------------------------------------------

    def install(self) -> None:
        functional = torch.nn.functional
        names = (("scaled_dot_product_attention", self._on_sdpa),) + tuple((n, None) for n in LOSSES)
        for name, callback in names:
            original = getattr(functional, name)
            self._restore.append((name, original))
            setattr(functional, name, self._wrapped(original, callback))

    def remove(self) -> None:
        for name, original in reversed(self._restore):
            setattr(torch.nn.functional, name, original)
        self._restore = []

    def _wrapped(self, original: Callable[..., Any], callback: Callable[..., Any] | None) -> Any:
        @functools.wraps(original)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if torch.compiler.is_compiling():
                return original(*args, **kwargs)
            if callback is not None:
                callback(args, kwargs)
                return original(*args, **kwargs)
            self._on_loss(original, args, kwargs)
            result = original(*args, **kwargs)
            self._on_loss_result(result)
            return result

        return wrapper

    # forward ------------------------------------------------------------------------------

    def _forward_pre(self, module: nn.Module) -> None:
        if self.busy or self._quiet():
            return
        if not self._stack and self._curvature_now():
            self._start, self._due = replay.start_state(), True
        self._stack.append(module)

    def _forward(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if self.busy or self._quiet():
            return
        if module in self._stack:
            while self._stack.pop() is not module:
                pass
        cheap, curv = self._cheap_now(), self._curvature_now()
        if not (cheap or curv):
            return
        name = self._names.module(module)
        if name is not None:
            for _, tensor in replay.outputs(output):
                if tensor.grad_fn is not None and id(tensor.grad_fn) not in self._inner:
                    self._inner[id(tensor.grad_fn)] = (tensor.grad_fn, name, module)
        if curv and not self._stack and self._start is not None:
            self._outermost(module, args, kwargs, output, self._start)
        if cheap and name is not None:
            self._module_probes_of(module, name, args, kwargs)

    def _outermost(self, module: nn.Module, args: tuple, kwargs: dict, output: Any, start: tuple) -> None:
        """Remember the outermost call for a replay; a loss it returned is the step's loss."""
        for path, tensor in replay.outputs(output):
            if tensor.grad_fn is not None:
                call = replay.Call(module, args, kwargs, *start, path=path)
                self._outer[id(tensor.grad_fn)] = (tensor.grad_fn, call)
                if id(tensor.grad_fn) in self._in_forward:  # nanoGPT / HF: logits, loss = model(x, y)
                    self._loss = replay.LossCall(replay.itself, call, tensor.shape, (), {})
                    self._losses += 1
        self._in_forward = {}

    def _module_probes(self, module: nn.Module, name: str, args: tuple, kwargs: dict) -> None:
        if isinstance(module, nn.MultiheadAttention):
            self._values.add(name, "attention", {"weight_bound" + HEAD: attention.weight_bound(module)},
                             {"weight_bound" + HEAD: "last"})
            stats = attention.mha_stats(module, args, kwargs)
            if stats is not None:
                self._values.add(name, "attention", stats, ATTENTION_HOW)
            return
        x = args[0] if args else None
        dim = activations.unit_dim(module, x) if isinstance(x, Tensor) else None
        if dim is not None:
            self._values.add(name, "activation", activations.activation_stats(x, dim), ACTIVATION_HOW)

    def _sdpa(self, args: tuple, kwargs: dict) -> None:
        if not self._cheap_now() or any(isinstance(m, nn.MultiheadAttention) for m in self._stack):
            return
        name = next((n for m in reversed(self._stack) if (n := self._names.module(m)) is not None), "")
        stats = attention.sdpa_stats(args, kwargs)
        if stats is not None:
            self._values.add(name, "attention", stats, ATTENTION_HOW)

    def _loss_called(self, function: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        cheap, curv = self._cheap_now(), self._curvature_now()
        given = dict(zip(("input", "target"), args)) | kwargs
        z, target = given.get("input"), given.get("target")
        if not (cheap or curv) or not isinstance(z, Tensor) or z.grad_fn is None:
            return
        chain = logits.view_chain(z)
        if curv:
            self._remember(function, chain, z, args, kwargs)
        if cheap and function.__name__ == "cross_entropy":
            self._logits_of(chain, z, target, given)

    def _logits_probe(self, chain: list, z: Tensor, target: Any, given: dict) -> None:
        found = next((self._inner[id(node)] for node, _ in chain if id(node) in self._inner), None)
        layer = found[1] if found is not None else ""
        if found is not None:
            self._head = (found[1], found[2])
        dtype = torch.float32 if torch.is_autocast_enabled(z.device.type) else z.dtype
        rows = logits.rows_of(z, target if isinstance(target, Tensor) else None,
                              int(given.get("ignore_index", -100)))
        if rows.numel():
            self._values.add(layer, "logits", logits.logit_stats(rows, dtype), LOGITS_HOW)

    def _remember_loss(self, function: Callable[..., Any], chain: list, z: Tensor, args: tuple,
                       kwargs: dict) -> None:
        for node, reshape_only in chain:
            entry = self._outer.get(id(node))
            if entry is not None and reshape_only:
                rest = args[1:]
                extra = {k: v for k, v in kwargs.items() if k != "input"}
                self._loss = replay.LossCall(function, entry[1], z.shape, rest, extra)
                self._losses += 1
                return

    def _loss_result(self, result: Any) -> None:
        """Remember a loss computed inside a module call: the outermost call's output may hold it."""
        inside = self._stack and isinstance(result, Tensor) and result.grad_fn is not None
        if inside and self._curvature_now():
            self._in_forward[id(result.grad_fn)] = result.grad_fn

    # optimizer step -----------------------------------------------------------------------

    def _step_pre(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        if self._cheap and step % self._every == 0 and self._head is not None:
            self._nlm_of(*self._head)
        if self._curvature and step % self._curvature == 0 and self._loss is not None:
            self._curvature_step(optimizer, step)
        elif self._curvature and step % self._curvature == 0 and self._due and not self._unmeasured:
            self._unmeasured = True
            self._warn("curvature", f"step {step}: curvature not measured: {UNMEASURED}")

    def _nlm(self, name: str, head: nn.Module) -> None:
        weight = head._parameters.get("weight")
        cos = logits.nlm_cos(weight) if isinstance(weight, Tensor) else None
        if cos is not None:
            self._values.add(name, "logits", {"nlm_cos": cos}, {"nlm_cos": "last"})

    def _curvature_of(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        loss, self._loss = self._loss, None
        reason = replay.why_not(loss.call.module)
        if reason is not None:
            raise RuntimeError(reason)
        self.busy = True
        try:
            with torch.enable_grad():  # optimizer step hooks may run under no_grad
                found, rule = self._sharpness(loss, optimizer, step)
        finally:
            self.busy = False
        if found is None:
            return
        found["micro_batches"] = float(self._losses)
        self._values.add("", "curvature", {k: torch.tensor(v) for k, v in found.items()}, {})
        if math.isnan(found["edge"]):
            self._warn("curvature", f"step {step}: {rule}: sharpness recorded without an edge")

    def _sharpness(self, loss: replay.LossCall, optimizer: torch.optim.Optimizer,
                   step: int) -> tuple[dict[str, float] | None, str]:
        """lambda_max (of the preconditioned Hessian for Adam), the edge and the trace."""
        trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
        value, leaves, originals = replay.replayed_loss(loss, trained)
        if not leaves:
            return None, ""
        limit, rule, scale, decay = curvature.edge(optimizer, originals)
        hvp = curvature.hvp_operator(value, leaves)
        operator = hvp if scale is None else (lambda v: scale * hvp(scale * v))
        like = leaves[0].detach()
        size = sum(p.numel() for p in leaves)
        generator = torch.Generator(device=like.device).manual_seed(self._seed * 1_000_003 + step)
        top, steps = curvature.lanczos_top(operator, size, curvature.LANCZOS_STEPS, generator, like)
        trace, se = curvature.hutchinson(hvp, size, curvature.HUTCHINSON_PROBES, generator, like)
        found = {"lambda_max": top + decay, "edge": limit, "edge_ratio": (top + decay) / limit,
                 "trace": trace, "trace_se": se, "lanczos_steps": float(steps), "loss": float(value.detach())}
        return found, rule

    # emission -----------------------------------------------------------------------------

    def _rows(self, step: int, rank: int, recorded: bool) -> Callable[[], dict] | None:
        """The step's rows (a writer batch), or None; the step's state is cleared."""
        values = self._values.take()
        self._stack, self._inner, self._outer, self._start, self._loss = [], {}, {}, None, None
        self._in_forward, self._losses, self._due = {}, 0, False
        if not values or not recorded:
            return None
        return rows_later(step, rank, derived(values))


def derived(values: dict[tuple[str, str, str], Tensor]) -> list[tuple[str, str, str, Tensor]]:
    """The stored quantities, from the accumulated sums and extremes."""
    out: list[tuple[str, str, str, Tensor]] = []
    groups: dict[tuple[str, str], dict[str, Tensor]] = {}
    for (layer, probe, key), value in values.items():
        groups.setdefault((layer, probe), {})[key] = value
    for (layer, probe), v in groups.items():
        if probe == "attention" and "rows" in v:
            rows = v["rows"].clamp(min=1)
            out += [(layer, probe, "max_logit" + HEAD, v["max_logit"]),
                    (layer, probe, "entropy" + HEAD, v["entropy_sum"] / rows),
                    (layer, probe, "log_keys", (v["log_keys_sum"] / rows).mean())]
        if probe == "attention" and "weight_bound" + HEAD in v:
            out.append((layer, probe, "weight_bound" + HEAD, v["weight_bound" + HEAD]))
        if probe == "logits" and "rows" in v:
            rows = v["rows"]
            found = {"log_z_mean": v["log_z_sum"] / rows, "log_z_max": v["log_z_max"],
                     "max_logit": v["max_logit"], "gap_mean": v["gap_sum"] / rows, "gap_min": v["gap_min"],
                     "collapse_frac": v["collapsed"] / rows, "saturated_frac": v["saturated"] / rows,
                     "rows": rows}
            out += [(layer, probe, key, value) for key, value in found.items()]
        if probe == "logits" and "nlm_cos" in v:
            out.append((layer, probe, "nlm_cos", v["nlm_cos"]))
        if probe == "activation":
            out += [(layer, probe, "rms", (v["sumsq"] / v["count"].clamp(min=1)).sqrt()),
                    (layer, probe, "max_abs", v["max_abs"]),
                    (layer, probe, "dead_frac", 1 - v["alive"].float().mean()),
                    (layer, probe, "units", torch.tensor(float(v["alive"].numel())))]
        if probe == "curvature":
            out += [(layer, probe, key, value) for key, value in v.items()]
    return out
