"""The analysis engine: run tables in, one tidy metrics table and one verdict per family out.

``analyze`` is pure: it reads the DataFrames it is handed (columns of the Arrow schemas in
gradscope/store/schema.py; any table or column may be missing) and never imports torch.
Multi-rank runs: only the lowest rank present is analysed (per-rank tables repeat the
model; their samples differ). Streaming over shards is the reader's job; SAMPLES is
reduced by gradscope.analysis.samples, as it streams or here when handed whole.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from gradscope.analysis.alignment import DEFAULT_WINDOW, alignment_metrics, alignment_verdict
from gradscope.analysis.coherence import coherence_metrics, coherence_verdict, concat_rows
from gradscope.analysis.conflict import conflict_metrics, conflict_verdict
from gradscope.analysis.noise import noise_metrics, noise_verdict
from gradscope.analysis.samples import SampleSummary, empty_frame, summarize
from gradscope.analysis.stability import stability_metrics, stability_verdict
from gradscope.analysis.types import FAMILIES, METRIC_COLUMNS, Verdict


@dataclass(frozen=True)
class Analysis:
    """Everything the renderers and ``check`` need: the metrics table and the verdicts."""

    metrics: pd.DataFrame  # columns METRIC_COLUMNS
    verdicts: tuple[Verdict, ...]  # one per family, in FAMILIES order
    head_sample: pd.DataFrame  # epoch, gwa: a bounded random sample of head GWA per epoch (plots)


def _lowest_rank(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    if frame is None or "rank" not in frame.columns or not len(frame):
        return frame
    return frame[frame["rank"] == frame["rank"].min()]


def head_layer(layers: pd.DataFrame | None, meta: Mapping[str, Any]) -> str | None:
    """The output head: meta["head"], else the last entry of meta["layers"] (names or
    dicts with "name"), else the last layer of the first recorded step in LAYERS order."""
    if meta.get("head"):
        return str(meta["head"])
    table = meta.get("layers")
    if table:
        last = table[-1]
        return str(last["name"] if isinstance(last, Mapping) else last)
    if layers is None or "layer" not in layers.columns or not len(layers):
        return None
    first = layers[layers["step"] == layers["step"].min()] if "step" in layers else layers
    return str(first["layer"].drop_duplicates().iloc[-1])


def _epochs(meta: Mapping[str, Any]) -> Mapping[int, int] | None:
    """step -> epoch from meta["epochs"], else from meta["epoch_starts"] (the steps where
    the recorder saw the training DataLoader begin an iteration), else None."""
    epochs = meta.get("epochs")
    if epochs:
        return {int(k): int(v) for k, v in epochs.items()}
    starts = sorted(int(s) for s in meta.get("epoch_starts") or [])
    if len(starts) < 2:
        return None
    last_step = max(int(meta.get("steps") or 0), starts[-1] + 1)
    steps = np.arange(starts[0], last_step)
    epochs_of_steps = np.searchsorted(starts, steps, side="right") - 1
    return dict(zip(steps.tolist(), epochs_of_steps.tolist()))


def sample_options(layers: pd.DataFrame | None, meta: Mapping[str, Any]) -> dict[str, Any]:
    """SampleReducer's arguments for the lowest rank: its LAYERS rows, and the head,
    epochs and window that meta.json gives (see ``analyze``)."""
    layers = _lowest_rank(layers)
    window = int(meta.get("steps_per_epoch") or DEFAULT_WINDOW)
    return {"layers": layers, "head": head_layer(layers, meta), "epochs": _epochs(meta), "window": window}


def _usable(summary: SampleSummary | None) -> SampleSummary | None:
    if summary is not None and summary.problem:
        raise ValueError(summary.problem)
    return summary


def _families(
    tables: Mapping[str, pd.DataFrame | None], summary: SampleSummary | None
) -> dict[str, tuple[Callable[[], pd.DataFrame], Callable[[pd.DataFrame], Verdict]]]:
    steps, layers = tables.get("steps"), tables.get("layers")
    gram, tasks, task_samples = tables.get("gram"), tables.get("tasks"), tables.get("task_samples")
    return {
        "conflict": (lambda: conflict_metrics(tasks, task_samples, gram, _usable(summary)), conflict_verdict),
        "coherence": (lambda: coherence_metrics(layers, _usable(summary), gram), coherence_verdict),
        "alignment": (lambda: alignment_metrics(_usable(summary)), alignment_verdict),
        "noise": (lambda: noise_metrics(layers, _usable(summary), gram), noise_verdict),
        "stability": (lambda: stability_metrics(steps, layers), stability_verdict),
    }


def analyze_tables(
    tables: Mapping[str, pd.DataFrame],
    *,
    run: str = "",
    meta: Mapping[str, Any] | None = None,
    samples: SampleSummary | None = None,
) -> Analysis:
    """Compute every metric family and its verdict.

    ``tables`` maps "steps", "layers", "samples", "gram", "tasks", "task_samples" to
    DataFrames (any may be missing); a streaming reader passes SAMPLES already reduced as
    ``samples`` instead (see ``sample_options``). ``meta`` (meta.json) may give "head"
    (the output layer for GWA), "layers" (the layer table, in model order), "epochs"
    (step -> epoch), "epoch_starts" and "steps_per_epoch" (window when no mapping;
    default 100). A family whose inputs are missing yields no rows and an "ok" verdict
    whose summary says "no data"; a family whose inputs are malformed yields a "warn"
    verdict saying the analysis failed.
    """
    meta = meta or {}
    data = {name: _lowest_rank(frame) for name, frame in tables.items()}
    if samples is None and data.get("samples") is not None:
        samples = summarize(data["samples"], **sample_options(data.get("layers"), meta))
    parts, verdicts = [], []
    for family, (compute, judge) in _families(data, samples).items():
        try:
            rows = compute()
            verdict = judge(rows)
        except (KeyError, ValueError, TypeError, IndexError) as error:
            rows = concat_rows([])
            verdict = Verdict(family, "warn", f"{family}: analysis failed ({error!r:.200})")
        parts.append(rows.assign(family=family, run=run))
        verdicts.append(verdict)
    metrics = pd.concat(parts, ignore_index=True)[list(METRIC_COLUMNS)]
    order = {family: index for index, family in enumerate(FAMILIES)}
    head_sample = samples.head_sample if samples is not None else empty_frame(["epoch", "gwa"])
    return Analysis(
        metrics=metrics,
        verdicts=tuple(sorted(verdicts, key=lambda v: order[v.family])),
        head_sample=head_sample,
    )
