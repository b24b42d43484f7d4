"""The step's loss, rebuilt as a function of the trained parameters, for curvature.

``Call`` is what the outermost module call of a curvature step left (its arguments, the
random and autocast state it started from, where its output lies); ``LossCall`` is the
loss function call (cross_entropy, mse_loss, binary_cross_entropy_with_logits) whose
input is that output, possibly reshaped. ``replayed_loss`` re-runs both without side
effects on the model or the random streams (see curvature.py's module docstring).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

NOT_REPLAYED = ("DistributedDataParallel", "FullyShardedDataParallel", "OptimizedModule")


@dataclass
class Call:
    module: nn.Module
    args: tuple
    kwargs: dict
    cpu_rng: Tensor
    cuda_rng: list[Tensor]
    autocast: list[tuple[str, torch.dtype]]
    path: tuple = ()  # where the loss input lies in the output: () the output itself, (key,) inside


@dataclass
class LossCall:
    function: Callable[..., Tensor]
    call: Call
    shape: torch.Size
    rest: tuple
    kwargs: dict


def itself(loss: Tensor) -> Tensor:
    """The loss function of a loss the module call returned itself (nanoGPT, HF models)."""
    return loss


def start_state() -> tuple[Tensor, list[Tensor], list[tuple[str, torch.dtype]]]:
    """The random streams and the autocast state as a forward starts."""
    cuda = [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())] \
        if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    autocast = [(device, torch.get_autocast_dtype(device)) for device in ("cpu", "cuda")
                if torch.is_autocast_enabled(device)]
    return torch.get_rng_state(), cuda, autocast


def outputs(output: Any) -> Iterator[tuple[tuple, Tensor]]:
    """(path, tensor) for the output itself or the tensors one level inside it."""
    if isinstance(output, Tensor):
        yield (), output
    elif isinstance(output, (tuple, list)):
        yield from (((i,), t) for i, t in enumerate(output) if isinstance(t, Tensor))
    elif isinstance(output, Mapping):
        yield from (((k,), t) for k, t in output.items() if isinstance(t, Tensor))


def why_not(module: nn.Module) -> str | None:
    """Why a module's call cannot be replayed, or None."""
    name = type(module).__name__
    if name in NOT_REPLAYED or "_orig_mod" in module._modules:
        return f"the model is wrapped in {name}: its forward is not re-run"
    return None


@contextlib.contextmanager
def _restored_streams(call: Call) -> Iterator[None]:
    devices = list(range(len(call.cuda_rng)))
    with torch.random.fork_rng(devices=devices, device_type="cuda"):
        torch.set_rng_state(call.cpu_rng)
        for index, state in enumerate(call.cuda_rng):
            torch.cuda.set_rng_state(state, index)
        with contextlib.ExitStack() as stack:
            # fused attention kernels have no double backward: the math one computes the same
            stack.enter_context(sdpa_kernel(SDPBackend.MATH))
            for device, dtype in call.autocast:
                stack.enter_context(torch.autocast(device, dtype=dtype))
            yield


def replayed_loss(loss: LossCall, trained: set[int]) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """(loss, new leaves for the trained parameters, the parameters they view)."""
    module = loss.call.module
    leaves: dict[str, Tensor] = {}
    originals: list[Tensor] = []
    state: dict[str, Tensor] = {}
    for name, param in module.named_parameters():
        if id(param) in trained and param.requires_grad:
            leaves[name] = param.detach().requires_grad_(True)
            originals.append(param)
        else:
            state[name] = param.detach()
    state.update({name: buffer.clone() for name, buffer in module.named_buffers()})
    with _restored_streams(loss.call), torch.enable_grad():
        output = functional_call(module, {**state, **leaves}, loss.call.args, loss.call.kwargs)
        for key in loss.call.path:
            output = output[key]
        value = loss.function(output.reshape(loss.shape), *loss.rest, **loss.kwargs)
    return value, list(leaves.values()), originals
