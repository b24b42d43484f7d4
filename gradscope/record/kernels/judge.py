"""Static coverage: which kernel computes a module's per-sample gradients, or why none can.

Judged per call at capture (the module's state then, e.g. BatchNorm's train mode), never
by reading a parametrized attribute or running a forward.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.nn.utils import parametrize

from gradscope.record.kernels import FACTORED, FALLBACK, KernelRegistry
from gradscope.record.kernels.bag import bag_problem
from gradscope.record.kernels.fallback import PARAMETRIZED, replay_problem

LEGACY_REPARAMETRIZED = (
    "legacy hook-based spectral_norm/weight_norm: a forward pre-hook computes the weight from "
    "{names}, whose per-sample gradients need that hook's Jacobian"
)
BATCHNORM_TRAIN = "BatchNorm in train mode couples samples: per-sample gradients are not defined"


@dataclass(frozen=True)
class Coverage:
    """Static judgement of how a module's per-sample gradients are computed."""

    method: str  # "ghost" | "materialize" | "norm-affine" | "fallback" | "none"
    covered: bool
    reason: str = ""  # why not covered


def judge(module: nn.Module, registry: KernelRegistry, route: str) -> Coverage:
    """The module's coverage: its kernel family, or "none" with the reason."""
    if "parametrizations" in module._modules or isinstance(module, parametrize.ParametrizationList):
        return Coverage("none", False, PARAMETRIZED)
    legacy = _legacy_reparametrized(module)
    if legacy:
        return Coverage("none", False, LEGACY_REPARAMETRIZED.format(names=", ".join(legacy)))
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if module.training:
            return Coverage("none", False, BATCHNORM_TRAIN)
        if not module.track_running_stats:
            return Coverage("none", False, "BatchNorm without running stats couples samples")
    if isinstance(module, nn.Embedding) and module.scale_grad_by_freq:
        return Coverage("none", False, "scale_grad_by_freq couples samples through counts")
    if isinstance(module, nn.EmbeddingBag):
        problem = bag_problem(module)
        if problem:
            return Coverage("none", False, problem)
    method, _ = registry.lookup(module)
    if method == FALLBACK:
        problem = replay_problem(module)
        return Coverage("none", False, problem) if problem else Coverage(FALLBACK, True)
    if method == FACTORED:
        return Coverage("materialize" if route == "materialize" else "ghost", True)
    return Coverage(method, True)


def _legacy_reparametrized(module: nn.Module) -> list[str]:
    """The parameters from which a legacy ``torch.nn.utils.spectral_norm`` / ``weight_norm``
    forward pre-hook recomputes a weight before each forward (empty when none does)."""
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    names: list[str] = []
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, SpectralNorm):
            names.append(f"{hook.name}_orig")
        elif isinstance(hook, WeightNorm):
            names.extend((f"{hook.name}_g", f"{hook.name}_v"))
    return names
