"""Step boundaries: which backward call belongs to which step, and when a step ends.

A small state machine fed typed events (no torch inside); the Recorder wires hooks to it
and does the measuring. The rules (docs/run-format.md, "Steps"):

- A step ends when an optimizer steps (its post hook), or when a GradScaler skips the
  optimizer's step. Backward calls before it are the step's micro-batches.
- Backward calls made inside ``optimizer.step(closure)`` are closure evaluations: the
  first is recorded (it is the step's last micro-batch: Lightning's gradient accumulation
  runs earlier micro-batches outside the step and the last one inside the closure); later
  ones are re-evaluations (LBFGS line search), counted but not recorded.
- With no optimizer created or seen stepping, the previous backward closes a step at the next backward's
  start unless its gradients were left to accumulate (the caller judges that), and at
  ``close`` whatever is pending is a step.
- A backward that raised is discarded: not a micro-batch, counted in ``raised``.
- Nested backward calls (reentrant checkpointing) never reach the machine: the hook
  wrapper passes them straight through.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Backward:
    """What a backward call is, decided when it begins."""

    step: int
    micro: int  # index among the step's recorded backward calls
    record: bool  # its loss and gradients are the step's (False: a closure re-evaluation)
    closure_eval: int  # 0 outside optimizer.step(closure), else 1, 2, ...


@dataclass(frozen=True)
class StepEnd:
    """A finished step."""

    step: int
    backward_calls: int  # backward calls that completed (closure re-evaluations included)
    recorded_backwards: int  # those whose loss and gradients are the step's
    closure_evals: int
    raised: int  # backward calls that raised (discarded)
    skipped: bool  # a GradScaler skipped the optimizer step
    optimizer: bool  # False: a hand-written update (no optimizer)


@dataclass(frozen=True)
class Began:
    """Answer to ``backward_began``: a hand-written step it closed first, and the call."""

    closed: StepEnd | None
    backward: Backward


class StepMachine:
    """Step boundaries from backward / optimizer / GradScaler events."""

    def __init__(self) -> None:
        self.step = 0
        self.optimizer_seen = False
        self.raised_total = 0
        self._running: Backward | None = None
        self._stepping = False
        self._closure = False
        self._reset()

    def _reset(self) -> None:
        self._completed = 0
        self._recorded = 0
        self._closure_evals = 0
        self._raised = 0

    # ------------------------------------------------------------------ queries
    @property
    def capturing(self) -> bool:
        """A forward now feeds a recorded backward (not an LBFGS re-evaluation)."""
        return not (self._stepping and self._closure and self._closure_evals > 0)

    @property
    def upcoming(self) -> int:
        """The step a forward pass now feeds: with no optimizer and a backward pending, the
        next one (the pending backward will most likely close its step first)."""
        if not self.optimizer_seen and not self._stepping and self.pending:
            return self.step + 1
        return self.step

    @property
    def pending(self) -> bool:
        """Backward calls completed since the last boundary."""
        return self._completed > 0

    # ------------------------------------------------------------------ backward
    def backward_began(self, accumulating: Callable[[], bool]) -> Began:
        """A backward call starts; ``accumulating()`` (asked only with no optimizer and a
        pending backward) says the previous backward's gradients were left to accumulate."""
        closed = None
        if not self.optimizer_seen and not self._stepping and self.pending and not accumulating():
            closed = self._end(skipped=False, optimizer=False)
        closure_eval = 0
        if self._stepping and self._closure:
            self._closure_evals += 1
            closure_eval = self._closure_evals
        record = closure_eval <= 1
        self._running = Backward(self.step, self._recorded, record, closure_eval)
        return Began(closed, self._running)

    def backward_ended(self) -> Backward:
        backward = self._current()
        self._completed += 1
        self._recorded += backward.record
        return backward

    def backward_raised(self) -> Backward:
        backward = self._current()
        if backward.closure_eval:
            self._closure_evals -= 1  # a failed evaluation: the next one may be recorded
        self._raised += 1
        self.raised_total += 1
        return backward

    def _current(self) -> Backward:
        running, self._running = self._running, None
        return running if running is not None else Backward(self.step, self._recorded, True, 0)

    # ------------------------------------------------------------------ optimizer
    def optimizer_created(self) -> None:
        """An optimizer exists: its steps, not hand-written updates, end steps (a script
        that zeroes gradients between backward calls of one step, as manual PCGrad does,
        must not have each backward taken for a hand-written step)."""
        self.optimizer_seen = True

    def optimizer_pre(self, closure: bool) -> None:
        self.optimizer_seen = True
        self._stepping = True
        self._closure = closure
        self._closure_evals = 0

    def optimizer_post(self) -> StepEnd:
        self._stepping = False
        return self._end(skipped=False, optimizer=True)

    def scaler_skipped(self) -> StepEnd:
        self.optimizer_seen = True
        self._stepping = False
        return self._end(skipped=True, optimizer=True)

    def close(self) -> StepEnd | None:
        """End of recording: pending hand-written backward calls make a last step."""
        if self.optimizer_seen or not self.pending:
            return None
        return self._end(skipped=False, optimizer=False)

    def _end(self, skipped: bool, optimizer: bool) -> StepEnd:
        end = StepEnd(
            step=self.step,
            backward_calls=self._completed,
            recorded_backwards=self._recorded,
            closure_evals=self._closure_evals,
            raised=self._raised,
            skipped=skipped,
            optimizer=optimizer,
        )
        self.step += 1
        self._reset()
        return end


__all__ = ["Backward", "Began", "StepEnd", "StepMachine"]
