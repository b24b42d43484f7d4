"""Instability probes recorded on the training side: attention, output logits,
activations and opt-in curvature (docs/probes.md). ``make_probes`` builds the
ProbeRecorder a config asks for, or None."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gradscope.record.config import RecordConfig
from gradscope.record.probes.recorder import ProbeRecorder


def make_probes(config: RecordConfig, names: Any, steps: Any, engine: Any, guard: Any,
                warn: Callable[[str, str], None]) -> ProbeRecorder | None:
    """The ProbeRecorder for ``config`` (None when no probe is on). ``steps``: the
    Recorder's StepMachine; ``engine``: its per-sample engine or None (its replays of a
    module under torch.func are not the user's calls: probes stay out of them)."""
    if not config.probes and not config.curvature:
        return None
    return ProbeRecorder(names, cheap=config.probes, every=config.every, curvature_every=config.curvature,
                         seed=config.seed, upcoming=lambda: steps.upcoming, capturing=lambda: steps.capturing,
                         quiet=lambda: engine is not None and (engine.suspended or engine.replaying),
                         guard=guard, warn=warn)
