"""The terminal report: sections composed as rich renderables."""

from __future__ import annotations

from rich.console import Console

from gradscope.report import overview
from gradscope.store.reader import Run


def render_report(run: Run, console: Console) -> None:
    steps = run.table("steps")
    layers = run.table("layers")
    console.print(overview.run_info(run, steps))
    console.print(overview.loss_curve(steps))
    console.print(overview.learning_rates(steps))
    console.print(overview.layer_table(layers))
    console.print(overview.coverage(run))
    console.print(overview.warnings(run))
