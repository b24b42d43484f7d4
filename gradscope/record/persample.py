"""The recorder's side of the per-sample engine: building it, and turning one backward's
engine output into a ``MicroStats`` of per-sample contributions (docs/per-sample-engine.md,
"Units"), with the factor f that converts them to per-sample-loss gradients."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from gradscope.record.config import RecordConfig
from gradscope.record.losses import BackwardLoss
from gradscope.record.reduction import Reduction, per_sample_factor
from gradscope.record.rows import MicroStats

Warn = Callable[[str, str], None]


def make_engine(config: RecordConfig) -> Any:
    """A PerSampleEngine for the profile, or None (profile minimal)."""
    if not config.per_sample:
        return None
    from gradscope.record.engine import EngineConfig, PerSampleEngine

    return PerSampleEngine(
        EngineConfig(gram=config.gram, sketch_dim=config.sketch, seed=config.seed, batch_dim=config.batch_dim)
    )


def coverage(engine: Any, module: torch.nn.Module) -> Any:
    if engine is None:
        from gradscope.record.engine import Coverage

        return Coverage(method="none", covered=False, reason="profile minimal: no per-sample")
    return engine.coverage(module)


@dataclass
class Collected:
    stats: MicroStats
    factor: tuple[float, Any]  # (f, source), see reduction.per_sample_factor
    batch_size: int


def collect(
    engine: Any, step: int, micro: int, loss: BackwardLoss | None, forced: str, groups: Any, warn: Warn
) -> Collected | None:
    """This backward's per-sample contributions c_i (hook gradients / GradScaler scale, the
    division done by the engine before squaring: ``engine.grad_scale``)."""
    stats = engine.collect(1.0, step=step)
    _report_failures(engine, warn)
    if engine.batch_conflict is not None:
        _switch_batch_dim(engine, warn)
        return None  # this backward's per-sample values used the wrong batch dimension
    if not stats:
        return None
    batch_size = next(iter(stats.values())).norm2.shape[0]
    reduction = (loss.reduction if loss is not None else None) or Reduction("mean", 1.0, False)
    layers = list(stats)
    micro_stats = MicroStats(
        micro=micro,
        layers=layers,
        norm2=[stats[n].norm2 for n in layers],
        weight_dot=[stats[n].weight_dot for n in layers],
        sketch=[stats[n].sketch for n in layers],
        gram=[stats[n].gram for n in layers],
        groups=groups,
        norm2_w=[getattr(stats[n], "weight_norm2", None) for n in layers],
        weight_dot_w=[getattr(stats[n], "weight_weight_dot", None) for n in layers],
    )
    return Collected(micro_stats, per_sample_factor(reduction, batch_size, forced), batch_size)


def _switch_batch_dim(engine: Any, warn: Warn) -> None:
    """A module declaring ``batch_first`` saw another batch size than dim 0 of earlier
    layers: the model is sequence-first. Use that module's batch dim from now on."""
    layer, dim, size, inferred = engine.batch_conflict
    engine.batch_conflict = None
    engine.config = replace(engine.config, batch_dim=dim)
    warn("batch dimension", f"{layer} declares batch_first=False and sees batch {size} at dim "
         f"{dim}, not {inferred} at dim 0: a sequence-first model; per-sample statistics use "
         f"batch dim {dim} from the next recorded step (this step's were dropped; "
         f"--batch-dim {dim} avoids this)")


def _report_failures(engine: Any, warn: Warn) -> None:
    failures = getattr(engine, "failures", None)
    while failures:
        layer, reason = failures.pop(0)
        layer = layer or "the root module"  # its own parameters have the layer name ""
        warn(f"per-sample kernel for {layer}", f"per-sample statistics for {layer} disabled ({reason}); "
             "training continues")


def without_layers(micro: MicroStats, dropped: set[str]) -> MicroStats:
    """``micro`` without the rows of ``dropped`` layers."""
    keep = [i for i, layer in enumerate(micro.layers) if layer not in dropped]
    return replace(
        micro,
        layers=[micro.layers[i] for i in keep],
        norm2=[micro.norm2[i] for i in keep],
        weight_dot=[micro.weight_dot[i] for i in keep],
        sketch=[micro.sketch[i] for i in keep],
        gram=[micro.gram[i] for i in keep],
        norm2_w=[micro.norm2_w[i] for i in keep] if micro.norm2_w else [],
        weight_dot_w=[micro.weight_dot_w[i] for i in keep] if micro.weight_dot_w else [],
    )
