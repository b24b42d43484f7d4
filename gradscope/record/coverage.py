"""Coverage from evidence: which layers actually got per-sample rows, and why others did not.

The engine feeds a ``CoverageLedger`` on every recorded backward: per layer, either "rows
recorded at step s" or "no rows at step s, because ...". Reasons come from every source:
the static judgement at the time of the step (BatchNorm in train mode, a parametrized
weight, a module inside torch.compile), run-time skips (batch size, a parameter shared with
an unrecorded module, a module returning no tensor that requires grad), kernel failures,
and whole-step drops (double backward, several backward passes through one graph, modules
disagreeing on the batch size). A step counts once per layer and reason, whatever the
number of micro-batches. ``layer_table`` merges this evidence into meta.json's layer table:
``covered`` is true only when rows were recorded (docs/run-format.md, meta.json).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

COMPILED = "runs inside torch.compile: gradscope's hooks stay out of compiled regions"
NO_OUTPUT = "the module returned no tensor that requires grad (None, or detached)"
DOUBLE_BACKWARD = (
    "double backward (create_graph=True): the gradient that flows through the first "
    "gradient's graph is not of the form b a^T that output hooks see"
)
SEVERAL_PASSES = (
    "several backward passes through one forward (retain_graph=True): rows of one pass are "
    "not rows of the gradient the optimizer sees"
)
UPSTREAM_OF_BATCHNORM = (
    "ran before a BatchNorm in train mode: its output gradients mix all samples through the "
    "batch statistics, so per-sample gradients are not defined"
)
RECOMPUTED_ONLY = "captured only during a backward (a recomputation) and never given a gradient"
NOT_STEPPED = (
    "its parameters are not in the optimizer that stepped (e.g. the other model of a GAN): "
    "rows would not be rows of a gradient any optimizer used"
)
BATCH_LAYOUT = "batch dimension being detected (sequence-first model): this step's values used the wrong one"

MAX_REASONS = 8  # distinct reasons kept per layer; later ones are counted together
OTHER_REASONS = "other reasons"


@dataclass
class LayerEvidence:
    """What one layer got over the run."""

    rows_steps: int = 0
    first_step: int | None = None
    last_step: int | None = None
    previous_last: int | None = None  # last_step before the latest step (to retract it)
    reasons: dict[str, int] = field(default_factory=dict)
    methods: dict[str, int] = field(default_factory=dict)  # method -> steps with rows by it
    reason_steps: dict[str, int] = field(default_factory=dict)  # reason -> last step counted


class CoverageLedger:
    """Per-layer evidence of per-sample rows; ``dirty`` when the table's verdicts change."""

    def __init__(self) -> None:
        self._layers: dict[str, LayerEvidence] = {}
        self.dirty = False

    def rows(self, step: int, layer: str, method: str = "") -> None:
        """Layer ``layer`` got per-sample rows at ``step``, computed by ``method``."""
        evidence = self._evidence(layer)
        if evidence.last_step == step and evidence.rows_steps:
            return
        if method:
            if method not in evidence.methods:
                self.dirty = True
            evidence.methods[method] = evidence.methods.get(method, 0) + 1
        if not evidence.rows_steps:
            self.dirty = True  # the layer is covered from now on
            evidence.first_step = step
        evidence.previous_last, evidence.last_step = evidence.last_step, step
        evidence.rows_steps += 1

    def missing(self, step: int, layer: str, reason: str) -> None:
        """Layer ``layer`` got no rows at ``step`` because of ``reason``."""
        evidence = self._evidence(layer)
        if reason not in evidence.reasons and len(evidence.reasons) >= MAX_REASONS:
            reason = OTHER_REASONS  # reasons that name per-step sizes must not grow meta.json
        if evidence.reason_steps.get(reason) == step:
            return
        if reason not in evidence.reasons:
            self.dirty = True
        evidence.reason_steps[reason] = step
        evidence.reasons[reason] = evidence.reasons.get(reason, 0) + 1

    def retract(self, step: int, reason: str | None, layers: set[str] | None = None) -> None:
        """The rows recorded at ``step`` (of ``layers``; None: every layer) were dropped
        (a whole-step drop after the fact); ``reason`` None: the step never existed
        (backward passes after the last optimizer step), so no reason is counted for it."""
        for layer, evidence in self._layers.items():
            if layers is not None and layer not in layers:
                continue
            if evidence.rows_steps and evidence.last_step == step:
                evidence.rows_steps -= 1
                evidence.last_step = evidence.previous_last if evidence.rows_steps else None
                if not evidence.rows_steps:
                    evidence.first_step = None
                    self.dirty = True
                if reason is not None:
                    self.missing(step, layer, reason)

    def take_dirty(self) -> bool:
        """Whether a verdict changed since the last call (write meta.json then)."""
        dirty, self.dirty = self.dirty, False
        return dirty

    def evidence(self, layer: str) -> LayerEvidence | None:
        return self._layers.get(layer)

    def layer_table(self, static: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """meta.json's "layers": the static entries with the evidence of this run.

        ``covered`` is true only when rows were recorded; ``reason`` is then empty, else the
        most frequent reason (the static one when the layer never ran in a recorded backward).
        """
        table = []
        for entry in static:
            evidence = self._layers.get(entry.get("reported_under", entry["name"]), LayerEvidence())
            merged = dict(entry)
            reasons = dict(sorted(evidence.reasons.items(), key=lambda kv: -kv[1]))
            covered = evidence.rows_steps > 0
            if not covered:
                static_reason = entry.get("reason") if not entry.get("covered") else ""
                merged["reason"] = next(iter(reasons), None) or static_reason or (
                    "no per-sample rows recorded: the layer never ran in a recorded backward"
                )
                merged["method"] = "none"
            else:
                merged["reason"] = ""
                merged["method"] = max(evidence.methods, key=evidence.methods.get, default=entry["method"])
            merged.update(
                methods=dict(evidence.methods),
                covered=covered,
                rows_steps=evidence.rows_steps,
                first_step=evidence.first_step,
                last_step=evidence.last_step,
                reasons=reasons,
            )
            table.append(merged)
        return table

    def _evidence(self, layer: str) -> LayerEvidence:
        evidence = self._layers.get(layer)
        if evidence is None:
            evidence = self._layers[layer] = LayerEvidence()
            self.dirty = True
        return evidence


class StepEvidence:
    """The engine's side of the ledger: what each backward showed, and whole-step drops.
    Mixed into ``PerSampleEngine`` (its per-backward state lives there)."""

    def _note(self, step: int | None, result: dict[str, Any]) -> None:
        """This backward's evidence, per layer, into the ledger."""
        if step is None:
            return
        drop = self._drop or (BATCH_LAYOUT if self.batch_conflict is not None else None)
        for layer in [*self._layer_order, *self._missing]:
            if layer in result:
                self.ledger.rows(step, layer, self._methods.get(layer, "none"))
            else:
                reason = drop or self._missing.get(layer) or "no statistics for the layer"
                self.ledger.missing(step, layer, reason)
        for layer, reason in self._standing.items():
            if layer not in result:
                self.ledger.missing(step, layer, reason)

    def mark_step_uncovered(self, reason: str) -> None:
        """The current backward's per-sample values are not covered (e.g. the recorder saw
        ``torch.autograd.grad(create_graph=True)``): ``collect`` drops them with ``reason``."""
        self._drop = self._drop or reason

    def take_step_drop(self) -> str | None:
        """Why the rows already collected for the current step must be dropped (several
        backward passes through one retained graph), once; None when they stand."""
        reason, self._step_drop = self._step_drop, None
        return reason

    def drop_step(self, step: int, reason: str, layers: set[str] | None = None) -> None:
        """The recorder dropped ``step``'s rows (of ``layers``; None: all), e.g. a
        GradScaler skipped the step."""
        self.ledger.retract(step, reason, layers)

    def _stale(self, use: Any) -> None:
        """A hook of a forward whose backward was already collected fired: a backward went
        through that graph again (retain_graph=True). If the first pass gave the call a
        gradient, the rows collected then are not rows of the gradient the optimizer sees."""
        last = self._last_collect
        if not use.received or last is None or last[0] != use.generation:
            return  # (the current forward's own values are not touched: it may be the next step's)
        if not self._retracted:  # the recorder drops the step's rows (take_step_drop)
            self._retracted = True
            self._step_drop = SEVERAL_PASSES
            if last[1] is not None and self._step in (None, last[1]):  # not a step already written
                self.ledger.retract(last[1], SEVERAL_PASSES)
