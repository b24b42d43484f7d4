"""Recording configuration: one frozen dataclass, carried to the training process as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from gradscope.errors import GradscopeError

PROFILES = ("minimal", "standard", "full")
REDUCTIONS = ("auto", "mean", "sum")


@dataclass(frozen=True)
class RecordConfig:
    """What to record and how often. Defaults suit a first look at a small script."""

    profile: str = "standard"  # minimal: per-step scalars; standard: + per-sample; full: + Gram
    every: int = 1  # per-layer and per-sample statistics on steps where step % every == 0
    sketch: int = 4  # k: each layer's per-sample sketch holds k*k numbers; 0 turns it off
    reduction: str = "auto"  # how the loss reduces over samples (auto reads the loss graph)
    batch_dim: int | None = None  # batch dimension of module inputs; None detects it
    seed: int = 0  # seeds the sketch projections (a private generator, never torch's global)
    curvature: int = 0  # Hessian top eigenvalue and trace every N steps (docs/probes.md); 0 off

    @classmethod
    def from_options(cls, **options: Any) -> RecordConfig:
        """Validate user-facing options; bad values raise GradscopeError naming the option."""
        config = cls(**options)
        if config.profile not in PROFILES:
            raise GradscopeError(f"--profile must be one of {', '.join(PROFILES)}, not {config.profile!r}")
        if config.reduction not in REDUCTIONS:
            raise GradscopeError(
                f"--reduction must be one of {', '.join(REDUCTIONS)}, not {config.reduction!r}"
            )
        if config.every < 1:
            raise GradscopeError(f"--every must be at least 1, not {config.every}")
        if config.sketch < 0:
            raise GradscopeError(f"--sketch must be 0 or more, not {config.sketch}")
        if config.curvature < 0:
            raise GradscopeError(f"--curvature every=N needs N >= 1, not {config.curvature}")
        if config.batch_dim is not None and config.batch_dim < 0:
            raise GradscopeError(f"--batch-dim must be 0 or more, not {config.batch_dim}")
        return config

    @property
    def per_sample(self) -> bool:
        return self.profile in ("standard", "full")

    @property
    def probes(self) -> bool:
        """The cheap instability probes (attention, logits, activations): not in minimal."""
        return self.profile != "minimal"

    @property
    def gram(self) -> bool:
        return self.profile == "full"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RecordConfig:
        """Parse the JSON handed over by ``gradscope record``; unknown keys are ignored."""
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls.from_options(**{k: v for k, v in data.items() if k in known})
