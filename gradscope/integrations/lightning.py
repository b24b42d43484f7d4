"""A Lightning ``Callback`` that records the run, as ``gradscope record`` would.

>>> from gradscope.integrations.lightning import GradscopeCallback  # doctest: +SKIP
>>> trainer = L.Trainer(callbacks=[GradscopeCallback("runs/lit")])  # doctest: +SKIP

Steps are the trainer's optimizer steps (``trainer.global_step`` counts the same ones):
Lightning's automatic optimization runs the last micro-batch of an accumulation inside
``optimizer.step(closure)`` and the earlier ones outside it; the recorder counts all of them
as the step's micro-batches. ``steps.loss`` is the mean of the step's micro-batch losses
(the values ``training_step`` returned): Lightning divides each by ``accumulate_grad_batches``,
also on the short step that closes an epoch with a number of batches not divisible by it,
and the callback multiplies that back (``gradscope record``, which cannot know the divisor,
records the sum of the divided losses). Under ``precision="16-mixed"`` losses and per-sample values
are unscaled by the GradScaler's scale; under bf16 autocast nothing is scaled. Layers are
named from the LightningModule (``net.0`` for ``self.net = nn.Sequential(...)``), as
``gradscope record`` names them.

The recorder starts at ``on_fit_start`` (after ``configure_optimizers``) and stops at
``on_fit_end`` (status finished) or ``on_exception`` (crashed; interrupted on Ctrl-C). Importing this module
imports Lightning (``lightning``, else ``pytorch_lightning``); gradscope itself never does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gradscope.integrations.session import Session, require

_pl = require(("lightning.pytorch", "pytorch_lightning"), "lightning", "gradscope's Lightning callback")

__all__ = ["GradscopeCallback"]


class GradscopeCallback(_pl.Callback):
    """Record the fit into ``run_dir`` (default: ``<trainer.log_dir>/gradscope``).

    Options as ``gradscope record``'s: ``every`` (per-layer and per-sample statistics on
    every N-th step), ``profile`` ("minimal", "standard", "full"), ``sketch``, ``reduction``,
    ``batch_dim``; ``force`` replaces an existing run directory.
    """

    def __init__(self, run_dir: str | os.PathLike[str] | None = None, *, every: int = 1,
                 profile: str = "standard", sketch: int = 4, reduction: str = "auto",
                 batch_dim: int | None = None, force: bool = False) -> None:
        from gradscope.record.config import RecordConfig

        options = dict(every=every, profile=profile, sketch=sketch, reduction=reduction, batch_dim=batch_dim)
        RecordConfig.from_options(**options)  # a bad option fails here, not inside fit
        self._session = Session(run_dir, dict(options, force=force))

    @property
    def run_dir(self) -> Path | None:
        """The run directory, once fitting has started."""
        return self._session.path

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if self._session.active:
            return
        run_dir = self._session.run_dir or Path(trainer.log_dir or trainer.default_root_dir) / "gradscope"
        facts = {
            "name": "lightning",
            "version": getattr(_pl, "__version__", ""),
            "global_step_start": int(trainer.global_step),
            "accumulate_grad_batches": int(trainer.accumulate_grad_batches),
            "precision": str(trainer.precision),
            "automatic_optimization": bool(pl_module.automatic_optimization),
        }
        self._session.start(run_dir, pl_module, list(trainer.optimizers), facts)
        if pl_module.automatic_optimization and trainer.accumulate_grad_batches > 1:
            # Lightning divides each micro-batch loss by accumulate_grad_batches, also on an
            # epoch's short last step: steps.loss multiplies that back (the mean micro-batch loss)
            self._session.recorder.loss_divisor = int(trainer.accumulate_grad_batches)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._session.finish("finished", int(trainer.global_step))

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        status = "interrupted" if isinstance(exception, KeyboardInterrupt) else "crashed"
        self._session.finish(status, int(trainer.global_step))
