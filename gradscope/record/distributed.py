"""Multi-process training as the recorder sees it: DDP's local gradients and the run card.

Under ``DistributedDataParallel`` the gradient in ``p.grad`` after a synchronising backward
is the all-reduced one: the mean over ranks of each rank's local gradient (DDP divides by
the world size, then sums). The per-sample contributions c_i a rank records sum to its
LOCAL gradient, before the all-reduce. So on recorded steps this module reads the local
gradient where DDP's reducer has not touched it yet: a tensor hook on each parameter DDP
reduces receives the gradient of this backward before it is accumulated into ``p.grad``
(DDP's reducer runs after accumulation), and ``p.grad`` still holds what earlier
``no_sync()`` micro-batches accumulated locally. |p.grad + incoming|^2 is then the squared
norm of the rank's local gradient over the step so far (``layers.local_norm2``). The hooks
live only for the length of one backward (none is left on a parameter for
``torch.save`` to meet), change nothing and return nothing.

What torch.distributed says (backend, world size, rank) and which wrappers ran (DDP, FSDP)
go to meta.json under ``distributed``. FSDP shards parameters: each rank holds a slice of
every gradient, so per-layer norms and per-sample rows of one rank are not the layer's;
that is detected and marked not covered, never reported as if it were.
"""

from __future__ import annotations

import sys
import weakref
from typing import Any

import torch

from gradscope.record.scalars import norms

DDP_AVERAGING = "mean over ranks (DDP divides by the world size, then all-reduces the sum)"
FSDP_NOT_COVERED = (
    "FSDP shards parameters and gradients across ranks: per-layer norms and per-sample rows of one "
    "rank cover only its shard, so gradscope does not combine them; statistics of FSDP-wrapped "
    "layers are not covered"
)
LOCAL_SOURCE = "layers.local_norm2 (tensor hooks before DDP's all-reduce)"
COMM_HOOK_NOT_COVERED = (
    "a DDP communication hook is registered: the all-reduced gradient is no longer known to be the "
    "mean of the local ones, so global S1 is not combined across ranks"
)


def _fsdp_types() -> tuple[type, ...]:
    """FSDP classes, only where the script already imported them (observed, never imported)."""
    found = []
    for module_name, class_name in (
        ("torch.distributed.fsdp.fully_sharded_data_parallel", "FullyShardedDataParallel"),
        ("torch.distributed.fsdp._fully_shard._fully_shard", "FSDPModule"),
    ):
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, class_name):
            found.append(getattr(module, class_name))
    return tuple(found)


def _kind(module: torch.nn.Module) -> str | None:
    """"DistributedDataParallel", an FSDP label, or None for any other module."""
    if isinstance(module, torch.nn.parallel.DistributedDataParallel):
        return "DistributedDataParallel"
    fsdp = _fsdp_types()
    if fsdp and isinstance(module, fsdp):  # fully_shard makes a class FSDP<Name> per module class
        name = type(module).__name__
        return name if name == "FullyShardedDataParallel" else "FSDP (fully_shard)"
    return None


class Distributed:
    """DDP / FSDP modules seen in this process, and the local gradient norms of a backward."""

    def __init__(self) -> None:
        self._ddp: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()
        self._ddp_seen = False  # stays True after a trainer drops its DDP wrapper (Lightning's teardown)
        self._wrappers: set[str] = set()
        self._kinds: dict[type, str | None] = {}
        self._comm_hook = False
        self._handles: list[Any] = []
        self._local: dict[int, torch.Tensor] = {}
        self._params: dict[int, torch.Tensor] = {}
        self._card: dict[str, Any] | None = None

    @property
    def active(self) -> bool:
        return bool(self._ddp)

    def module_seen(self, module: torch.nn.Module) -> None:
        """Called on each module forward: remember DDP and FSDP wrappers (one dict look-up per
        call once the module's class is known)."""
        kind = self._kinds.get(type(module), "")
        if kind == "":
            kind = self._kinds[type(module)] = _kind(module)
        if kind is None:
            return
        self._wrappers.add(kind)
        if kind == "DistributedDataParallel":
            self._ddp.add(module)
            self._ddp_seen = True
            self._comm_hook = self._comm_hook or bool(getattr(module, "_comm_hooks", None))

    def arm(self) -> None:
        """Before a recorded backward: hook every parameter a seen DDP module reduces."""
        self.disarm()
        for ddp in list(self._ddp):
            ignored = getattr(ddp, "parameters_to_ignore", set())
            for name, param in ddp.module.named_parameters():
                if param.requires_grad and name not in ignored and id(param) not in self._params:
                    self._params[id(param)] = param
                    self._handles.append(param.register_hook(self._hook_for(param)))

    def _hook_for(self, param: torch.Tensor) -> Any:
        ref = weakref.ref(param)
        local = self._local

        def hook(grad: torch.Tensor) -> None:
            owner = ref()
            if owner is None:
                return
            total = grad if owner.grad is None else owner.grad.detach() + grad.detach()
            local[id(owner)] = norms([total])[0] ** 2

        return hook

    def disarm(self) -> dict[int, torch.Tensor]:
        """After the backward: remove the hooks; id(param) -> |local gradient|^2 (float64,
        on the device; scaled as the backward's gradients were)."""
        for handle in self._handles:
            handle.remove()
        local, self._local = self._local, {}
        self._handles, self._params = [], {}
        return local

    def card(self) -> dict[str, Any] | None:
        """meta.json's ``distributed``: None when torch.distributed was never seen initialised
        (after ``destroy_process_group`` the last card read stays)."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            return self._card
        world = dist.get_world_size()
        not_covered = []
        if any(w != "DistributedDataParallel" for w in self._wrappers):
            not_covered.append(FSDP_NOT_COVERED)
        if self._comm_hook:
            not_covered.append(COMM_HOOK_NOT_COVERED)
        self._card = {
            "backend": str(dist.get_backend()),
            "world_size": world,
            "ranks": list(range(world)),
            "wrappers": sorted(self._wrappers),
            "gradient_averaging": DDP_AVERAGING if self._ddp_seen else None,
            "local_gradients": LOCAL_SOURCE if self._ddp_seen else None,
            "comm_hook": self._comm_hook,
            "not_covered": not_covered,
        }
        return self._card
