"""gradscope: training-dynamics diagnostics for PyTorch, from the gradients themselves.

Zero-code: ``gradscope record -- python train.py``. In code::

    with gradscope.Recorder(model, optimizer, run_dir="runs/exp1"):
        train()

One-line additions inside a training step (no-ops when nothing records)::

    gradscope.tasks(seg=loss_seg, depth=loss_depth)   # per-task gradient conflict
    gradscope.groups(domain_ids)                       # per-sample group labels
    gradscope.losses(per_sample_losses)                # per-sample losses of the next backward
    gradscope.indices(dataset_indices)                 # dataset index of each sample
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from gradscope.record.recorder import Recorder

__all__ = ["Recorder", "groups", "indices", "losses", "tasks", "__version__"]


def __getattr__(name: str) -> Any:
    # torch is imported only when the recorder is used, so analysis stays torch-free.
    if name == "Recorder":
        try:
            from gradscope.record.recorder import Recorder
        except ModuleNotFoundError as err:
            if err.name != "torch":
                raise
            raise ImportError("gradscope.Recorder needs PyTorch: pip install 'gradscope[record]'") from None
        return Recorder
    raise AttributeError(f"module 'gradscope' has no attribute {name!r}")


def tasks(**losses: Any) -> None:
    """Name the step's task losses (scalars, or per-sample vectors of shape [B]).

    Call before (or instead of) summing them; the backward you run is unchanged. Under a
    recorder, each recorded step stores the per-layer K x K Gram of the task gradients.
    """
    from gradscope.record.active import active_recorder

    recorder = active_recorder()
    if recorder is not None:
        recorder.set_tasks(losses)


def groups(labels: Any) -> None:
    """Give each sample of the step's batch a group label (task, domain, source, class)."""
    from gradscope.record.active import active_recorder

    recorder = active_recorder()
    if recorder is not None:
        recorder.set_groups(labels)


def losses(per_sample: Any) -> None:
    """Each sample's loss for the next backward (shape [B], e.g. ``reduction="none"``).

    Without it, SAMPLES.loss is filled only where the loss graph holds the values exactly
    (``criterion(out, y)`` or ``criterion(out, y, reduction="none").mean()``).
    """
    _declare("loss", per_sample)


def indices(dataset_indices: Any) -> None:
    """Each sample's dataset index for the next backward (shape [B]).

    Without it, indices come from a map-style DataLoader's sampler when one batch is
    fetched per backward (docs/run-format.md, samples).
    """
    _declare("index", dataset_indices)


def _declare(kind: str, values: Any) -> None:
    from gradscope.record.active import active_recorder

    recorder = active_recorder()
    if recorder is not None:
        recorder.declare(kind, values)
