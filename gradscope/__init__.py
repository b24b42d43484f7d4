"""gradscope: training-dynamics diagnostics for PyTorch, from the gradients themselves.

Zero-code: ``gradscope record -- python train.py``. In code::

    with gradscope.Recorder(model, optimizer, run_dir="runs/exp1"):
        train()

One-line additions inside a training step (no-ops when nothing records)::

    gradscope.tasks(seg=loss_seg, depth=loss_depth)   # per-task gradient conflict
    gradscope.groups(domain_ids)                       # per-sample group labels
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from gradscope.record.recorder import Recorder

__all__ = ["Recorder", "groups", "tasks", "__version__"]


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
