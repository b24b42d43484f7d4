"""``gradscope record -- CMD``: run an unmodified training command and record it.

Ends with one line on stderr (gradscope/record/summary.py): where the run went, how many
steps it holds, the per-sample coverage and the number of recorder warnings.
"""

from __future__ import annotations

import importlib.util
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, TextIO

import typer

from gradscope.errors import GradscopeError
from gradscope.record.config import PROFILES, REDUCTIONS, RecordConfig
from gradscope.record.launch import default_run_dir, launch

MAX_SKETCH = 64  # k*k = 4096 float32 numbers per sample and layer: beyond that, store the Gram
Profile = Enum("Profile", {name: name for name in PROFILES}, type=str)  # type: ignore[misc]
Reduction = Enum("Reduction", {name: name for name in REDUCTIONS}, type=str)  # type: ignore[misc]
NO_TORCH = "needs PyTorch, which this Python cannot import: pip install 'gradscope[record]'"


def require_torch(command: str) -> None:
    """The analysis install has no torch; recording does (pyproject.toml, extra 'record')."""
    try:
        found = importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # a broken or blocked torch is as good as none
        found = False
    if not found:
        raise GradscopeError(f"gradscope {command} {NO_TORCH}")


class WarningCounter:
    """A stand-in for sys.stderr that counts the "gradscope: warning:" lines written through
    it (the launcher's; the recorder's own go to events.jsonl and are counted from there)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.warnings = stream, 0

    def write(self, text: str) -> int:
        self.warnings += text.count("gradscope: warning:")
        return self.stream.write(text)

    def __getattr__(self, name: str) -> object:
        return getattr(self.stream, name)


def record(
    ctx: typer.Context,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run directory (default runs/NAME-TIME).")
    ] = None,
    every: Annotated[
        int, typer.Option(min=1, help="Record per-layer and per-sample statistics every N steps.")
    ] = 1,
    profile: Annotated[
        Profile, typer.Option(help="minimal (per-step scalars), standard (+ per-sample), full (+ Gram).")
    ] = "standard",
    sketch: Annotated[
        int, typer.Option(min=0, max=MAX_SKETCH, help="Sketch size k (k*k numbers per sample and layer).")
    ] = 4,
    reduction: Annotated[Reduction, typer.Option(help="Loss reduction over samples.")] = "auto",
    batch_dim: Annotated[
        int | None, typer.Option(help="Batch dimension of module inputs (default: auto).")
    ] = None,
    curvature: Annotated[
        str | None,
        typer.Option(help="Opt-in Hessian probe: every=N (top eigenvalue and trace every N steps)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Write into an existing run directory.")] = False,
) -> None:
    """Run COMMAND (after --) unchanged and record its training into a run directory.

    Example: gradscope record --out runs/mlp -- python train.py --epochs 1
    """
    require_torch("record")
    command = list(ctx.args)
    config = RecordConfig.from_options(
        profile=Profile(profile).value, every=every, sketch=sketch,
        reduction=Reduction(reduction).value, batch_dim=batch_dim, curvature=curvature_every(curvature),
    )
    run_dir = out if out is not None else default_run_dir(command)
    counted = WarningCounter(sys.stderr)
    sys.stderr = counted  # type: ignore[assignment]  # the launcher's own warnings, for the summary
    try:
        code = launch(command, run_dir, config, force=force)
    finally:
        sys.stderr = counted.stream
    from gradscope.record.summary import summary_line  # after the run: not on its start path

    print(f"gradscope: {summary_line(run_dir, counted.warnings, code)}", file=sys.stderr, flush=True)
    raise typer.Exit(code)


def curvature_every(text: str | None) -> int:
    """N from ``--curvature every=N`` (0 when the option is absent)."""
    if text is None:
        return 0
    name, _, value = text.partition("=")
    if name.strip() != "every" or not value.strip().isdigit() or int(value) < 1:
        raise GradscopeError(f"--curvature takes every=N with N >= 1, not {text!r}")
    return int(value)


def register(app: typer.Typer) -> None:
    app.command(
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        epilog=f"Profiles: {', '.join(PROFILES)}.",
    )(record)
