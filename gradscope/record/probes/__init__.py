"""Instability probes recorded on the training side: attention, output logits,
activations and opt-in curvature (docs/probes.md). ``make_probes`` builds the
ProbeRecorder a config asks for, or NoProbes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gradscope.record.config import RecordConfig
from gradscope.record.probes.recorder import ProbeRecorder


class NoProbes:
    """Probes off: every entry point does nothing."""

    busy = False

    def install(self) -> None: ...
    def remove(self) -> None: ...
    def forward_pre(self, module: Any) -> None: ...
    def forward(self, module: Any, args: tuple, kwargs: dict, output: Any) -> None: ...
    def step_pre(self, optimizer: Any, step: int) -> None: ...

    def rows(self, step: int, rank: int, recorded: bool) -> None:
        return None


def make_probes(config: RecordConfig, names: Any, steps: Any, engine: Any, guard: Any,
                warn: Callable[[str, str], None]) -> ProbeRecorder | NoProbes:
    """The ProbeRecorder for ``config`` (NoProbes when no probe is on). ``steps``: the
    Recorder's StepMachine; ``engine``: its per-sample engine or None (its replays of a
    module under torch.func are not the user's calls: probes stay out of them)."""
    if not config.probes and not config.curvature:
        return NoProbes()
    return ProbeRecorder(names, cheap=config.probes, every=config.every, curvature_every=config.curvature,
                         seed=config.seed, upcoming=lambda: steps.upcoming, capturing=lambda: steps.capturing,
                         quiet=lambda: engine is not None and (engine.suspended or engine.replaying),
                         guard=guard, warn=warn)
