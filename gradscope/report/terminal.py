"""The terminal report: sections composed as rich renderables.

Order: run information, the verdict overview, one section per metric family
(conflict, coherence, alignment, noise, stability), then what the recorder wrote
directly (loss, learning rates, per-layer table), coverage and warnings last.
"""

from __future__ import annotations

from rich.console import Console, RenderableType

from gradscope.analysis.engine import Analysis
from gradscope.analysis.run import analyze_run
from gradscope.report import overview, sections
from gradscope.store.reader import Run


def report_renderables(run: Run, analysis: Analysis, width: int = 80) -> list[RenderableType]:
    """Every section of the report, in reading order, laid out for ``width`` columns."""
    steps = run.table("steps")
    layers = run.table("layers")
    banner = [overview.gap_banner(analysis.gap)] if analysis.gap else []
    return [
        *banner,
        overview.run_info(run, steps),
        sections.verdict_overview(analysis.verdicts),
        *sections.family_sections(analysis.metrics, analysis.verdicts, width),
        overview.loss_curve(steps, width),
        overview.learning_rates(steps, width),
        overview.layer_table(layers, width),
        overview.coverage(run),
        overview.warnings(run, analysis.gap),
    ]


def render_report(
    run: Run, console: Console, analysis: Analysis | None = None, progress: bool = False
) -> Analysis:
    """Print the report; analyses the run first unless ``analysis`` is given. Returns it."""
    if analysis is None:
        analysis = analyze_run(run, progress=progress)
    for renderable in report_renderables(run, analysis, console.width):
        console.print(renderable)
    return analysis
