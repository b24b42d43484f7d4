"""Shapes shared by the analysis engine and everything that reads its results.

The metrics table is tidy: one row per (run, step, family, name, scope, key) with one
float ``value``. ``step`` is -1 for values that summarise the whole run (an epoch
score, a fitted trend). ``scope`` says what the row is about and ``key`` which one:

==========  ==========================================
scope       key
==========  ==========================================
model       "" (the whole model)
layer       qualified module name, e.g. "blocks.0.attn"
task_pair   "seg|depth" (task names joined by "|")
task        a task name
group       a sample group label, as text
sample      "<step>:<micro>:<sample>" of the recorded batch
epoch       the epoch index, as text
param_group an optimizer's param group: "0", "1"; "<optimizer>.<group>" with several
==========  ==========================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

METRIC_COLUMNS = ("run", "step", "family", "name", "scope", "key", "value")

FAMILIES = ("conflict", "coherence", "alignment", "noise", "stability")

Level = Literal["ok", "warn", "alert", "no data", "failed"]
# The judged levels, in order (ok < warn < alert): what a verdict rule compares.
LEVELS: tuple[Level, ...] = ("ok", "warn", "alert")
# The two states that are not a judgement: the family had nothing to judge (``reason`` says
# why), or its analysis raised (``summary`` holds the error in one line).
NO_DATA: Level = "no data"
FAILED: Level = "failed"
STATES: tuple[Level, ...] = (*LEVELS, NO_DATA, FAILED)

# Why a family has no data (Verdict.reason when level is NO_DATA).
NOT_RECORDED = "not recorded"
PROFILE = "profile"
TOO_FEW_STEPS = "too few steps"
TOO_FEW_EPOCHS = "too few epochs"
CRASHED = "run crashed before the first step"
NO_STEPS = "no step recorded"


@dataclass(frozen=True)
class Verdict:
    """The judgement of one metric family on one run, with the evidence behind it."""

    family: str
    level: Level
    summary: str  # one line a person reads first, e.g. "loss spikes at steps 40, 41"
    metric: str = ""  # "family.name" of the metric that decided it
    value: float = float("nan")
    threshold: float = float("nan")
    steps: tuple[int, ...] = ()
    source: str = ""  # the paper or rule that justifies the threshold
    details: tuple[str, ...] = field(default_factory=tuple)
    reason: str = ""  # for NO_DATA: one of the reasons above

    @property
    def judged(self) -> bool:
        """True for ok / warn / alert: the family had data and its analysis ran."""
        return self.level in LEVELS


def no_data(family: str, reason: str, why: str, source: str = "") -> Verdict:
    """A NO_DATA verdict: ``reason`` is the category, ``why`` says it for a person."""
    return Verdict(family, NO_DATA, f"no data: {why}", source=source, reason=reason)
