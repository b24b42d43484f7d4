"""The analysis engine: run tables in, one tidy metrics table and one verdict per family out.

``analyze`` is pure: it reads the DataFrames it is handed (columns of the Arrow schemas in
gradscope/store/schema.py; any table or column may be missing) and never imports torch.
Multi-rank runs (DDP) are combined over the global batch by gradscope.analysis.ranks:
steps once, every rank's samples, S1 from the all-reduced gradient. Streaming over shards
is the reader's job; SAMPLES is reduced by gradscope.analysis.samples, as it streams or
here when handed whole.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from gradscope.analysis.alignment import DEFAULT_WINDOW, alignment_metrics, alignment_verdict
from gradscope.analysis.coherence import coherence_metrics, coherence_verdict, concat_rows
from gradscope.analysis.conflict import conflict_metrics, conflict_verdict
from gradscope.analysis.ddp_noise import ddp_noise_rows
from gradscope.analysis.noise import noise_metrics, noise_verdict
from gradscope.analysis.oscillation import grad_autocorr_rows, update_oscillation_rows
from gradscope.analysis.ranks import combine, lowest_rank, ranks_reason
from gradscope.analysis.samples import SampleSummary, empty_frame, summarize
from gradscope.analysis.schedule import SCHEDULE_NAMES, schedule_metrics
from gradscope.analysis.stability import curvature_reason, stability_metrics, stability_verdict
from gradscope.analysis.types import (
    CRASHED,
    FAILED,
    FAMILIES,
    METRIC_COLUMNS,
    NO_DATA,
    NO_STEPS,
    NOT_RECORDED,
    PROFILE,
    Verdict,
    no_data,
)

RAISE_ENV = "GRADSCOPE_RAISE"  # "1": an analysis family that raises propagates (tests, debugging)
PER_SAMPLE_FAMILIES = ("coherence", "alignment", "noise")
RECORDING_STATES = {
    "never-started": "the recorder never started",
    "no-backward": "the recorder saw no backward pass",
    "lost": "nothing was saved",
}


@dataclass(frozen=True)
class Analysis:
    """Everything the renderers and ``check`` need: the metrics table and the verdicts."""

    metrics: pd.DataFrame  # columns METRIC_COLUMNS
    verdicts: tuple[Verdict, ...]  # one per family, in FAMILIES order
    head_sample: pd.DataFrame  # epoch, gwa: a bounded random sample of head GWA per epoch (plots)
    recorded_steps: int = 0  # distinct steps in STEPS (lowest rank)
    gap: str = ""  # why the run as a whole has no data (every verdict NO_DATA); "" when it has

    def verdict(self, family: str) -> Verdict | None:
        return next((v for v in self.verdicts if v.family == family), None)


def run_gap(steps: pd.DataFrame | None, meta: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, text) when the run as a whole has nothing to analyse, else None.

    meta["recording"] (written by the recorder; absent in older runs) may say the recorder
    never started or never saw a backward pass; otherwise a run without one STEPS row
    either crashed before its first step (meta status crashed / interrupted) or ran
    without the recorder seeing a training step.
    """
    recording = meta.get("recording")
    if isinstance(recording, Mapping) and recording.get("state") in RECORDING_STATES:
        detail = " ".join(str(recording.get("reason") or "").split())
        text = RECORDING_STATES[str(recording["state"])] + (f": {detail}" if detail else "")
        return NOT_RECORDED, text
    if steps is not None and "step" in steps.columns and len(steps):
        return None
    status = str(meta.get("status") or "")
    if status in ("crashed", "interrupted"):
        code = meta.get("exit_code")
        return CRASHED, f"the run {status} before its first step" + (f" (exit code {code})" if code else "")
    # Say "saw no optimizer step" only when nothing says otherwise: a card that counts steps,
    # or a run never finalised, lost its rows (missing or damaged shards, a kill) (issue 12).
    recorded = meta.get("steps") if isinstance(meta.get("steps"), int) else 0
    if isinstance(recording, Mapping) and recording.get("state") == "ok" or recorded > 0:
        return NO_STEPS, ("no readable training step, though meta.json says steps were recorded "
                          "(shards missing or damaged: see the warnings)")
    if status == "running":
        return NO_STEPS, ("no training step was saved, and the run was never finalised (still "
                          "running, or its gradscope record was killed)")
    return NO_STEPS, "no training step was recorded (the recorder saw no optimizer step)"


def _raise_errors(flag: bool | None) -> bool:
    return os.environ.get(RAISE_ENV, "") == "1" if flag is None else flag


def failed(family: str, error: Exception) -> Verdict:
    """The FAILED verdict of a family whose analysis raised ``error`` (one line)."""
    message = " ".join(str(error).split())[:200]
    return Verdict(family, FAILED, f"analysis failed: {type(error).__name__}: {message}")


def _profile_reason(verdict: Verdict, meta: Mapping[str, Any]) -> Verdict:
    """A per-sample family without data on a minimal-profile run: say it is the profile."""
    config = meta.get("config")
    profile = config.get("profile") if isinstance(config, Mapping) else None
    unrecorded = verdict.level == NO_DATA and verdict.reason == NOT_RECORDED
    if not unrecorded or verdict.family not in PER_SAMPLE_FAMILIES or profile != "minimal":
        return verdict
    why = "profile minimal records no per-sample statistics (record with --profile standard)"
    return replace(verdict, summary=f"no data: {why}", reason=PROFILE)


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
    layers = lowest_rank(layers)
    window = int(meta.get("steps_per_epoch") or DEFAULT_WINDOW)
    return {"layers": layers, "head": head_layer(layers, meta), "epochs": _epochs(meta), "window": window}


def _usable(summary: SampleSummary | None) -> SampleSummary | None:
    if summary is not None and summary.problem:
        raise ValueError(summary.problem)
    return summary


def _sketch_moments(summary: SampleSummary | None) -> pd.DataFrame | None:
    usable = _usable(summary)
    return usable.sketch_moments if usable is not None else None


def _dynamics(summary: SampleSummary | None) -> pd.DataFrame:
    usable = _usable(summary)
    return usable.dynamics if usable is not None else concat_rows([])


def _families(
    tables: Mapping[str, pd.DataFrame | None], summary: SampleSummary | None,
    raw: Mapping[str, pd.DataFrame | None],
) -> dict[str, tuple[Callable[[], pd.DataFrame], Callable[[pd.DataFrame], Verdict]]]:
    steps, layers = tables.get("steps"), tables.get("layers")
    gram, tasks, task_samples = tables.get("gram"), tables.get("tasks"), tables.get("task_samples")
    return {
        "conflict": (lambda: conflict_metrics(tasks, task_samples, gram, _usable(summary)), conflict_verdict),
        "coherence": (lambda: concat_rows([coherence_metrics(layers, _usable(summary), gram),
                                           grad_autocorr_rows(_sketch_moments(summary))]),
                      coherence_verdict),
        "alignment": (lambda: concat_rows([alignment_metrics(_usable(summary)), _dynamics(summary)]),
                      alignment_verdict),
        "noise": (lambda: concat_rows([noise_metrics(layers, _usable(summary), gram),
                                       ddp_noise_rows(raw.get("layers"), raw.get("steps"))]), noise_verdict),
        "stability": (
            lambda: concat_rows([
                stability_metrics(steps, layers, summary.nonfinite if summary is not None else None,
                                  tables.get("probes")),
                update_oscillation_rows(layers),
                schedule_metrics(steps, layers),  # lr, weight and update norms: shown, never judged
            ]),
            lambda rows: stability_verdict(rows[~rows["name"].isin(SCHEDULE_NAMES)]),
        ),
    }


def analyze_tables(
    tables: Mapping[str, pd.DataFrame],
    *,
    run: str = "",
    meta: Mapping[str, Any] | None = None,
    samples: SampleSummary | None = None,
    raise_errors: bool | None = None,
) -> Analysis:
    """Compute every metric family and its verdict.

    ``tables`` maps "steps", "layers", "samples", "gram", "tasks", "task_samples" to
    DataFrames (any may be missing); a streaming reader passes SAMPLES already reduced as
    ``samples`` instead (see ``sample_options``). ``meta`` (meta.json) may give "head"
    (the output layer for GWA), "layers" (the layer table, in model order), "epochs"
    (step -> epoch), "epoch_starts" and "steps_per_epoch" (window when no mapping;
    default 100), "recording", "status" and "config" (see ``run_gap``).

    A run with no recorded step gets a NO_DATA verdict in every family (``Analysis.gap``
    says why). A family whose inputs are missing gets a NO_DATA verdict with the reason;
    a family whose analysis raises gets a FAILED verdict with the error in one line, or,
    with ``raise_errors`` (default: environment GRADSCOPE_RAISE=1), the error propagates.
    """
    meta = meta or {}
    data = combine(tables, meta)
    steps = data.get("steps")
    recorded = int(steps["step"].nunique()) if steps is not None and "step" in steps.columns else 0
    gap = run_gap(steps, meta)
    if gap is not None:
        verdicts = tuple(no_data(family, *gap) for family in FAMILIES)
        return Analysis(concat_rows([]).assign(family="", run=run)[list(METRIC_COLUMNS)], verdicts,
                        empty_frame(["epoch", "gwa"]), recorded, gap[1])
    if samples is None and data.get("samples") is not None:
        samples = summarize(data["samples"], **sample_options(data.get("layers"), meta))
    parts, verdicts = [], []
    for family, (compute, judge) in _families(data, samples, tables).items():
        try:
            rows = compute()
            verdict = ranks_reason(_profile_reason(judge(rows), meta), tables.get("steps"), meta)
            verdict = curvature_reason(verdict, meta)
        except Exception as error:  # noqa: BLE001  (any failure becomes a loud FAILED verdict)
            if _raise_errors(raise_errors):
                raise
            rows, verdict = concat_rows([]), failed(family, error)
        parts.append(rows.assign(family=family, run=run))
        verdicts.append(verdict)
    metrics = pd.concat(parts, ignore_index=True)[list(METRIC_COLUMNS)]
    order = {family: index for index, family in enumerate(FAMILIES)}
    head_sample = samples.head_sample if samples is not None else empty_frame(["epoch", "gwa"])
    return Analysis(
        metrics=metrics,
        verdicts=tuple(sorted(verdicts, key=lambda v: order[v.family])),
        head_sample=head_sample,
        recorded_steps=recorded,
    )
