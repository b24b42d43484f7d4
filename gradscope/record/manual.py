"""Hand-written updates (no optimizer): what the last backward left, to tell a step from
gradient accumulation at the next backward.

PyTorch's examples update weights through ``p.data.add_(p.grad, alpha=-lr)``, which does
not bump ``p._version``, after ``model.zero_grad()`` (gradients set to None). So the
previous backward's gradients count as left to accumulate only when every parameter's
``.grad`` is the same tensor object with the same ``_version`` as right after that backward,
no weight's ``_version`` moved, and (when a snapshot was taken) no weight changed value.
Weights and gradients are held by weak reference or copied: nothing keeps a user's tensor
alive.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

from gradscope.record.optim import InitialWeights, before_step

Tensors = list[torch.Tensor]


class ManualStep:
    """State right after a backward in a script that has stepped no optimizer."""

    def __init__(self, params: Tensors, measure: Any | None, initial: InitialWeights) -> None:
        self.params = params
        self._grads = [_grad_state(p.grad) for p in params]
        self._versions = [p._version for p in params]
        # a recorded step: the values an optimizer's pre hook would read (optim.before_step)
        self.pre = None if measure is None else before_step(params, measure, initial, closure=False)
        self.before: Tensors | None = None if self.pre is None else self.pre["before"]

    def accumulating(self) -> bool:
        """The gradients were left to accumulate: nobody zeroed, replaced or stepped.
        With no parameter known (raw tensors, no module) there is nothing to judge by, and
        every backward is a step."""
        if not self.params:
            return False
        if any(_grad_state(p.grad) != state for p, state in zip(self.params, self._grads)):
            return False
        if any(p._version != v for p, v in zip(self.params, self._versions)):
            return False
        if self.before is None:
            return True
        return all(torch.equal(p.detach(), b) for p, b in zip(self.params, self.before))


def _grad_state(grad: torch.Tensor | None) -> tuple[Any, int] | None:
    """(identity, version) of a gradient; compared with ``==``, a dead weakref never matches."""
    if grad is None:
        return None
    return (_Identity(grad), grad._version)


class _Identity:
    """Equal only to an identity of the same live tensor object."""

    def __init__(self, tensor: torch.Tensor) -> None:
        self._ref = weakref.ref(tensor)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Identity):
            return NotImplemented
        mine = self._ref()
        return mine is not None and mine is other._ref()

    __hash__ = None  # type: ignore[assignment]
