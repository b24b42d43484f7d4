"""A Hugging Face ``TrainerCallback`` that records the run, as ``gradscope record`` would.

>>> from gradscope.integrations.transformers import GradscopeCallback  # doctest: +SKIP
>>> Trainer(model, args, train_dataset=data, callbacks=[GradscopeCallback("runs/hf")])  # doctest: +SKIP

Steps are the Trainer's optimizer steps (``state.global_step`` counts the same ones): with
``gradient_accumulation_steps=N`` each step has N backward calls, each on the loss the
Trainer backpropagates (divided by N, or normalised by the step's token count for models
that take ``num_items_in_batch``), so ``steps.loss`` is the step's loss as the Trainer logs
it. Layers are named from the model handed to the Trainer (``transformer.h.0.attn.c_attn``).

The recorder starts at ``on_train_begin`` (after the optimizer is created) and stops at
``on_train_end`` (status finished); a run that raises is closed at exit, marked crashed
(the Trainer has no exception hook). Importing this module imports ``transformers``;
gradscope itself never does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gradscope.integrations.session import Session, require

_transformers = require(("transformers",), "transformers", "gradscope's Hugging Face callback")

__all__ = ["GradscopeCallback"]


class GradscopeCallback(_transformers.TrainerCallback):
    """Record ``Trainer.train()`` into ``run_dir`` (default: ``<args.output_dir>/gradscope``).

    Options as ``gradscope record``'s: ``every``, ``profile``, ``sketch``, ``reduction``,
    ``batch_dim``; ``force`` replaces an existing run directory.
    """

    def __init__(self, run_dir: str | os.PathLike[str] | None = None, *, every: int = 1,
                 profile: str = "standard", sketch: int = 4, reduction: str = "auto",
                 batch_dim: int | None = None, force: bool = False) -> None:
        from gradscope.record.config import RecordConfig

        options = dict(every=every, profile=profile, sketch=sketch, reduction=reduction, batch_dim=batch_dim)
        RecordConfig.from_options(**options)  # a bad option fails here, not inside train()
        self._session = Session(run_dir, dict(options, force=force))

    @property
    def run_dir(self) -> Path | None:
        """The run directory, once training has started."""
        return self._session.path

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       optimizer: Any = None, **kwargs: Any) -> None:
        if self._session.active:
            return
        run_dir = self._session.run_dir or Path(args.output_dir) / "gradscope"
        # the torch optimizer inside accelerate's AcceleratedOptimizer: the one whose step hooks fire
        optimizers = [] if optimizer is None else [getattr(optimizer, "optimizer", optimizer)]
        facts = {
            "name": "transformers",
            "version": getattr(_transformers, "__version__", ""),
            "global_step_start": int(state.global_step),
            "gradient_accumulation_steps": int(args.gradient_accumulation_steps),
            "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "32",
            "max_grad_norm": args.max_grad_norm,
        }
        self._session.start(run_dir, model, optimizers, facts)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._session.finish("finished", int(state.global_step))
