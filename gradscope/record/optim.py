"""What the recorder reads off an optimizer: its parameters, hyperparameters, and the
per-parameter values around its step (weights, gradients, update, distance from init)."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.weak import WeakIdKeyDictionary

from gradscope.record import scalars
from gradscope.record.update_sketch import update_sketches


def optimizer_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The trainable parameters the optimizer steps, in param-group order."""
    return [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]


def hparams(optimizer: Any) -> list[dict[str, Any]]:
    """One JSON-ready dict per param group (lr, betas, weight_decay, ...); [] without one."""
    if optimizer is None:
        return []
    return [{k: _plain(v) for k, v in group.items() if k != "params"} for group in optimizer.param_groups]


def _plain(value: Any) -> Any:
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.device.type == "cpu":
        return float(value)  # an lr held in a CPU tensor: no device sync
    return str(value)


class InitialWeights:
    """W_0 per parameter: the first snapshot seen, kept on the host (weakly keyed)."""

    def __init__(self) -> None:
        self._initial = WeakIdKeyDictionary()

    def distances(self, params: list[torch.Tensor], before: list[torch.Tensor]) -> torch.Tensor:
        """||W_before - W_0|| per parameter."""
        initial = []
        for param, value in zip(params, before):
            if param not in self._initial:
                self._initial[param] = value.detach().to("cpu", copy=True)
            initial.append(self._initial[param])
        return scalars.distances(before, initial)


def before_step(
    params: list[torch.Tensor], measure: Any, initial: InitialWeights, closure: bool
) -> dict[str, Any]:
    """Values read in the optimizer's pre hook; each one None when its statistic failed.
    With a closure the gradients are not final yet (read after the first evaluation)."""
    before = measure("weight snapshot", scalars.snapshot)(params)
    return {
        "params": params,
        "before": before,
        "weight_norm": measure("weight norms", scalars.norms)(params),
        "grad_norm": None if closure else measure("grad norms", scalars.grad_norms)(params),
        "init_distance": None if before is None else measure("init distance", initial.distances)(
            params, before
        ),
    }


def after_step(pre: dict[str, Any], measure: Any) -> dict[str, torch.Tensor]:
    """Per-parameter values of a finished optimizer step (those that were measured)."""
    update = sketch = None
    if pre["before"] is not None:
        update = measure("update norms", scalars.distances)(pre["params"], pre["before"])
        sketch = measure("update sketch", update_sketches)(pre["params"], pre["before"])
    values = {"weight_norm": pre["weight_norm"], "update_norm": update, "update_sketch": sketch,
              "init_distance": pre["init_distance"], "grad_norm": pre["grad_norm"]}
    return {name: value for name, value in values.items() if value is not None}
