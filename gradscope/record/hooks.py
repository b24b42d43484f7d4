"""Global hook plumbing: nothing is registered on the user's modules or parameters.

PyTorch's global hooks give step boundaries (optimizer step pre/post hooks) and module
calls (module forward pre/post hooks) without a reference to the model. Two entry
points have no global hook and are wrapped while recording: ``torch.autograd.backward``
(the loss is the root tensor; ``Tensor.backward`` calls it) and ``GradScaler.step`` /
``GradScaler.scale`` (skipped steps, the loss scale), and ``DataLoader.__iter__`` (epoch
boundaries: each fresh iteration of the training loader starts an epoch). Every callback runs under
``Guard``: an exception disables that callback, is reported once, and never reaches the
training loop.

A backward call made while a wrapped one runs (reentrant gradient checkpointing calls
``torch.autograd.backward`` from inside the backward pass, on another thread on CUDA)
passes straight through: one depth counter for the process, not per thread. A backward
that raises is reported (``backward_raised``) and the exception goes on to the script.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch.nn.modules import module as torch_module
from torch.optim import optimizer as torch_optimizer


class Guard:
    """Runs callbacks; the first exception of a callback disables it and is reported."""

    def __init__(self, report: Callable[[str, BaseException], None]) -> None:
        self._report = report
        self.disabled: set[str] = set()

    def __call__(self, name: str, callback: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(callback)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if name in self.disabled:
                return None
            try:
                return callback(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - never raise into training
                self.disabled.add(name)
                self._report(name, err)
                return None

        return guarded


class Callbacks:
    """What the recorder implements; each is called under the guard."""

    def forward_pre(self, module: torch.nn.Module, args: tuple) -> None: ...
    def forward(self, module: torch.nn.Module, args: tuple, kwargs: dict, output: Any) -> None: ...
    def backward_begin(self, tensors: Any, grad_tensors: Any = None) -> None: ...
    def backward_end(self) -> None: ...
    def backward_raised(self, error: BaseException) -> None: ...
    def step_pre(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None: ...
    def step_post(self, optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None: ...
    def optimizer_created(self, optimizer: torch.optim.Optimizer) -> None: ...
    def loader_started(self, loader: Any) -> None: ...
    def scaler_scaled(self, scaler: Any, outputs: Any, scaled: Any) -> None: ...
    def scaler_stepped(self, scaler: Any, optimizer: torch.optim.Optimizer, stepped: bool) -> None:
        ...

    steps_emitted: int = 0


class GlobalHooks:
    """Installs the global hooks and wrappers for ``callbacks``; ``remove`` undoes all."""

    def __init__(self, callbacks: Callbacks, guard: Guard) -> None:
        self._callbacks = callbacks
        self._guard = guard
        self._handles: list[Any] = []
        self._restore: list[tuple[Any, str, Any]] = []
        self._depth = 0  # wrapped backward calls running (process-wide, see module doc)

    def install(self) -> None:
        g, c = self._guard, self._callbacks
        forward_pre = g("forward_pre", c.forward_pre)
        forward = g("forward", c.forward)
        step_pre = g("step_pre", c.step_pre)
        step_post = g("step_post", c.step_post)
        # Dynamo inlines global hooks into the graphs it traces: return before anything runs
        compiling = torch.compiler.is_compiling
        self._handles = [
            torch_module.register_module_forward_pre_hook(
                lambda m, a: None if compiling() else forward_pre(m, a)
            ),
            torch_module.register_module_forward_hook(
                lambda m, a, k, o: None if compiling() else forward(m, a, k, o), with_kwargs=True
            ),
            torch_optimizer.register_optimizer_step_pre_hook(lambda o, a, k: step_pre(o, a, k)),
            torch_optimizer.register_optimizer_step_post_hook(lambda o, a, k: step_post(o, a, k)),
        ]
        self._wrap(torch.autograd, "backward", self._backward_wrapper)
        self._wrap(torch.utils.data.DataLoader, "__iter__", self._iter_wrapper)
        self._wrap(torch.nn.Module, "compile", self._compile_wrapper(forward_pre))
        self._wrap(torch.optim.Optimizer, "__init__", self._optimizer_init_wrapper)
        scaler_class = getattr(getattr(torch, "amp", None), "GradScaler", None)
        if scaler_class is not None:
            self._wrap(scaler_class, "scale", self._scale_wrapper)
            self._wrap(scaler_class, "step", self._step_wrapper)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for owner, name, original in reversed(self._restore):
            setattr(owner, name, original)
        self._restore = []

    def _wrap(self, owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        original = getattr(owner, name)
        self._restore.append((owner, name, original))
        setattr(owner, name, functools.wraps(original)(make(original)))

    def _backward_wrapper(self, original: Callable[..., Any]) -> Callable[..., Any]:
        begin = self._guard("backward_begin", self._callbacks.backward_begin)
        end = self._guard("backward_end", self._callbacks.backward_end)
        raised = self._guard("backward_raised", self._callbacks.backward_raised)

        def backward(tensors: Any, *args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return original(tensors, *args, **kwargs)
            self._depth += 1
            try:
                begin(tensors, args[0] if args else kwargs.get("grad_tensors"))
                try:
                    result = original(tensors, *args, **kwargs)
                except BaseException as error:
                    raised(error)
                    raise
                end()
                return result
            finally:
                self._depth -= 1

        return backward

    @staticmethod
    def _compile_wrapper(forward_pre: Callable[..., Any]) -> Callable[[Any], Any]:
        """``model.compile()`` compiles in place: its modules' forward hooks then run only
        inside Dynamo, so the module is introduced to the recorder here (named, and its
        layers reported as running inside torch.compile)."""

        def make(original: Callable[..., Any]) -> Callable[..., Any]:
            def compile(module: Any, *args: Any, **kwargs: Any) -> Any:
                result = original(module, *args, **kwargs)
                forward_pre(module, ())
                return result

            return compile

        return make

    def _optimizer_init_wrapper(self, original: Callable[..., Any]) -> Callable[..., Any]:
        created = self._guard("optimizer_created", self._callbacks.optimizer_created)

        def init(optimizer: Any, *args: Any, **kwargs: Any) -> None:
            original(optimizer, *args, **kwargs)
            created(optimizer)

        return init

    def _iter_wrapper(self, original: Callable[..., Any]) -> Callable[..., Any]:
        started = self._guard("loader_started", self._callbacks.loader_started)

        def iterate(loader: Any) -> Any:
            started(loader)
            return original(loader)

        return iterate

    def _scale_wrapper(self, original: Callable[..., Any]) -> Callable[..., Any]:
        scaled = self._guard("scaler_scaled", self._callbacks.scaler_scaled)

        def scale(scaler: Any, outputs: Any) -> Any:
            result = original(scaler, outputs)
            scaled(scaler, outputs, result)
            return result

        return scale

    def _step_wrapper(self, original: Callable[..., Any]) -> Callable[..., Any]:
        stepped = self._guard("scaler_stepped", self._callbacks.scaler_stepped)

        def step(scaler: Any, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
            before = self._callbacks.steps_emitted
            result = original(scaler, optimizer, *args, **kwargs)
            stepped(scaler, optimizer, self._callbacks.steps_emitted != before)
            return result

        return step
