"""What the recorder reads off an optimizer: its parameters and hyperparameters."""

from __future__ import annotations

from typing import Any

import torch


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
