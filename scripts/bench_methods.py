"""The benchmark's methods: each gives a step function and owns what it installs.

Adding a method is one line: a gradscope variant is an entry of ``GRADSCOPE`` (name ->
RecordConfig options, e.g. a recorder switch), an anchor a branch of ``method_step``.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from bench_models import Workload
from torch import nn

# gradscope variants: name -> gradscope.record.config.RecordConfig options (one line each)
GRADSCOPE: dict[str, dict[str, Any]] = {
    "gradscope-minimal": {"profile": "minimal"},
    "gradscope-standard": {"profile": "standard"},
    "gradscope-full": {"profile": "full"},
    # the default cadence's amortised cost: steps 0, 10, 20 ... recorded, the others not
    "gradscope-standard-every10": {"profile": "standard", "every": 10},
}
ANCHORS = ("opacus-hooks", "opacus-ghost", "torch.func", "backpack")
METHODS = ("plain", *GRADSCOPE, *ANCHORS)
OPTIONAL = {"opacus-hooks": "opacus", "opacus-ghost": "opacus", "backpack": "backpack"}


Step = Callable[[torch.Tensor, torch.Tensor], None]


@dataclass
class Method:
    """A method's step; ``hooks``: gradscope's global hooks, removed between its steps when
    methods alternate in one process (installed again, untimed, before each of its steps)."""

    step: Step
    hooks: Any = None
    every: int = 1  # gradscope's cadence: step i is recorded when i % every == 0


@dataclass
class Setup:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    work: Workload
    loss: nn.Module = field(default_factory=nn.CrossEntropyLoss)

    def standard_step(self, forward: nn.Module, backward: Callable[[torch.Tensor], None] | None = None,
                      after: Callable[[], Any] | None = None) -> Step:
        def step(x: torch.Tensor, y: torch.Tensor) -> None:
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss(self.work.to_loss_input(forward(x)), y)
            if backward is None:
                loss.backward()
            else:
                backward(loss)
            if after is not None:
                after()
            self.optimizer.step()

        return step


def _norms_of(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Per-sample L2 norm over several [B, ...] tensors."""
    return torch.stack([t.flatten(1).pow(2).sum(1) for t in tensors]).sum(0).sqrt()


@contextlib.contextmanager
def method_step(method: str, s: Setup) -> Iterator[Method]:
    """The method's step on ``s`` while the context is open; it removes what it installed."""
    if method == "plain":
        yield Method(s.standard_step(s.model))
    elif method in GRADSCOPE:
        import gradscope
        from gradscope.record.config import RecordConfig

        config = RecordConfig.from_options(**GRADSCOPE[method])
        with tempfile.TemporaryDirectory(prefix="bench-gradscope-") as run_dir:
            recorder = gradscope.Recorder(s.model, s.optimizer, run_dir=run_dir, config=config)
            with recorder:
                yield Method(s.standard_step(s.model), recorder._hooks, config.every)
    elif method == "opacus-hooks":
        from opacus import GradSampleModule

        gsm = GradSampleModule(s.model, batch_first=True, loss_reduction="mean")
        params = [p for p in s.model.parameters() if p.requires_grad]

        def norms() -> torch.Tensor:
            value = _norms_of([p.grad_sample for p in params])
            for p in params:
                p.grad_sample = None
            return value

        try:
            yield Method(s.standard_step(gsm, after=norms))
        finally:
            gsm._close()
    elif method == "opacus-ghost":
        from opacus.grad_sample import GradSampleModuleFastGradientClipping

        gsm = GradSampleModuleFastGradientClipping(
            s.model, batch_first=True, loss_reduction="mean", max_grad_norm=1.0, use_ghost_clipping=True
        )
        try:
            yield Method(s.standard_step(gsm, after=gsm.get_norm_sample))
        finally:
            gsm._close()
    elif method == "torch.func":
        yield Method(_torch_func_step(s))
    elif method == "backpack":
        yield Method(_backpack_step(s))
    else:
        raise ValueError(f"unknown method {method!r}")


def _torch_func_step(s: Setup) -> Step:
    """vmap(grad) per-sample gradients; their mean is the batch gradient of the mean loss."""
    from torch.func import functional_call, grad, vmap

    params = dict(s.model.named_parameters())  # a tied weight once; functional_call re-ties it

    def sample_loss(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = functional_call(s.model, p, (x.unsqueeze(0),))
        return s.loss(s.work.to_loss_input(out), y.unsqueeze(0))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        s.optimizer.zero_grad(set_to_none=True)
        grads = per_sample({k: v.detach() for k, v in params.items()}, x, y)
        _norms_of(list(grads.values()))
        for name, g in grads.items():
            params[name].grad = g.mean(0)
        s.optimizer.step()

    return step


def _backpack_step(s: Setup) -> Step:
    from backpack import backpack, extend
    from backpack.extensions import BatchL2Grad

    model, loss = extend(s.model), extend(nn.CrossEntropyLoss())
    params = [p for p in model.parameters() if p.requires_grad]
    names = {id(p): n for n, p in model.named_parameters()}

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        s.optimizer.zero_grad(set_to_none=True)
        value = loss(s.work.to_loss_input(model(x)), y)
        with backpack(BatchL2Grad()):
            value.backward()
        missing = [names[id(p)] for p in params if getattr(p, "batch_l2", None) is None]
        if missing:  # BackPACK skips modules it has no rule for: say so rather than under-count
            owners = sorted({type(m).__name__ for m in model.modules()
                             if any(names.get(id(p)) in missing for p in m.parameters(recurse=False))})
            raise RuntimeError(f"no BatchL2Grad for {', '.join(owners)} ({len(missing)} parameters)")
        torch.stack([p.batch_l2 for p in params]).sum(0).sqrt()
        for p in params:
            del p.batch_l2
        s.optimizer.step()

    return step
