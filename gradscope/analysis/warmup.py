"""Grad-norm spikes in the warm-up window, where the robust z-score has too little history.

``robust_z`` needs MIN_HISTORY previous values: the first MIN_HISTORY recorded steps are
not scored. A blow-up there (a bad initialisation, a first batch of garbage, a learning
rate warm-up that starts too high) would otherwise read "no spikes". The warm-up rule
scores each of those steps (but the first) by

.. math:: r_t = x_t / \\operatorname{med}(x_0..x_{t-1})

on the pre-clip norm where recorded (else STEPS.grad_norm), and flags r_t above
WARMUP_SPIKE_RATIO (100: two decades; healthy early mini-batch norms move by a few x
step to step, and Stable-SPAM reports real spikes at 50-1000x). A median of the steps
available so far rather than a running max: one large early norm does not mask later
ones, and the first norm (often the largest at initialisation) does not set the bar alone.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradscope.analysis.coherence import has_columns, tidy
from gradscope.analysis.probes import Finding
from gradscope.analysis.thresholds import MIN_HISTORY, WARMUP_SPIKE_RATIO

SPIKE_SCORES = ("loss_spike_z", "grad_norm_preclip_spike_z", "grad_norm_spike_z")


def warmup_ratio(values: pd.Series, min_history: int = MIN_HISTORY) -> pd.Series:
    """x_t / median(previous observed values) for the observed values 2..min_history (the
    ones robust_z cannot score yet); NaN elsewhere and for NaN values (gaps).

    >>> warmup_ratio(pd.Series([1.0, 2.0, 300.0, 1.0]), 3).tolist()
    [nan, 2.0, 200.0, nan]
    """
    observed = values.dropna()
    out = pd.Series(np.nan, index=values.index)
    for i in range(1, min(min_history, len(observed))):
        median = float(np.median(observed.iloc[:i]))
        if median > 0:
            out[observed.index[i]] = observed.iloc[i] / median
    return out


def warmup_rows(steps: pd.DataFrame | None) -> list[pd.DataFrame]:
    """grad_norm_warmup_ratio rows (model scope) for the unscored warm-up steps."""
    if not has_columns(steps, "step"):
        return []
    frame = steps.sort_values("step").drop_duplicates("step").reset_index(drop=True)
    preclip = "grad_norm_preclip" in frame and frame["grad_norm_preclip"].notna().any()
    column = "grad_norm_preclip" if preclip else "grad_norm"
    if column not in frame:
        return []
    frame = frame.assign(ratio=warmup_ratio(frame[column].astype(float)))
    return [tidy(frame.dropna(subset=["ratio"]), "grad_norm_warmup_ratio", "ratio")]


def warmup_findings(rows: pd.DataFrame) -> list[Finding]:
    """A warn finding for warm-up steps whose ratio exceeds WARMUP_SPIKE_RATIO."""
    hit = rows[(rows["name"] == "grad_norm_warmup_ratio") & (rows["value"] > WARMUP_SPIKE_RATIO)]
    if not len(hit):
        return []
    text = (f"grad-norm spike in the warm-up window ({hit['value'].max():.3g}x the median of the "
            f"steps before it; z-scores need {MIN_HISTORY} previous steps)")
    steps = tuple(int(s) for s in hit["step"])
    return [("warn", text, "grad_norm_warmup_ratio", float(hit["value"].max()), WARMUP_SPIKE_RATIO, steps)]


def scored_note(rows: pd.DataFrame) -> str:
    """Which steps the spike z-scores covered, when some recorded steps had none."""
    scores = rows[rows["name"].isin(SPIKE_SCORES) & (rows["scope"] == "model")]
    scored = scores.dropna(subset=["value"])
    if not len(scored) or scores["step"].min() >= scored["step"].min():
        return ""
    return (f" (spikes z-scored from step {int(scored['step'].min())} on; earlier steps: not enough history, "
            f"only the warm-up rule, grad norm > {WARMUP_SPIKE_RATIO:g}x the median so far)")
