"""``gradscope export RUN --tensorboard DIR``: the metrics as TensorBoard scalars and histograms."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gradscope.analysis.run import analyze_run
from gradscope.errors import GradscopeError
from gradscope.errors import short_path as shown
from gradscope.report.export import state_lines
from gradscope.store.reader import open_run


def export(
    run: Annotated[Path, typer.Argument(help="Run directory written by gradscope record.")],
    tensorboard: Annotated[
        Path | None,
        typer.Option("--tensorboard", help="Write TensorBoard event files into this folder (created)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an earlier gradscope export in that folder.")
    ] = False,
) -> None:
    """Export a run's metrics for other dashboards.

    Scalars: the metrics table (loss, grad norms, learning rate per param group, per-layer
    weight / update norms, noise scale, ...); histograms: per-sample gradient norms per step.

    Example: gradscope export runs/mlp --tensorboard tb/mlp && tensorboard --logdir tb
    """
    if tensorboard is None:
        raise GradscopeError("nothing to export to: pass --tensorboard DIR")
    from gradscope.report.tensorboard import SUFFIX, write_tensorboard  # tensorboard: only when asked

    earlier = _earlier_exports(tensorboard, run, SUFFIX)
    if earlier and not force:
        raise GradscopeError(f"{shown(tensorboard)} already holds a gradscope export ({earlier[0].name}); "
                             "pass --force to replace it")
    opened = open_run(run)
    analysis = analyze_run(opened, progress=True)
    for old in earlier:
        old.unlink()
    exported = write_tensorboard(opened, analysis.metrics, tensorboard)
    for line in state_lines(analysis):
        typer.echo(f"gradscope export: {line}", err=True)
    left = f"; left out {exported.whole_run_rows} whole-run values (step -1, see gradscope metrics)" \
        if exported.whole_run_rows else ""
    typer.echo(f"wrote {exported.scalars} scalar points and {exported.histograms} histograms to "
               f"{exported.path}{left}", err=True)


def _earlier_exports(folder: Path, run: Path, suffix: str) -> list[Path]:
    """Event files of an earlier export in ``folder``; bad input when it cannot hold one."""
    try:
        if folder.resolve() == run.resolve() or folder.resolve().is_relative_to(run.resolve()):
            raise GradscopeError(f"--tensorboard {shown(folder)} is inside the run; give another folder")
    except (OSError, RuntimeError):
        pass  # unresolvable: mkdir says why
    if folder.exists() and not folder.is_dir():
        raise GradscopeError(f"--tensorboard {shown(folder)} is a file; give a folder")
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith("events.out.tfevents.") and
                  p.name.endswith(suffix))


def register(app: typer.Typer) -> None:
    app.command()(export)
