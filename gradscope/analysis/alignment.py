r"""Gradient-weight alignment (GWA; Hölzl et al. 2025, "Gradient-Weight Alignment").

Per sample i and layer l, with W_l the layer's weights BEFORE the optimizer step:

.. math::
    a_i = \cos(-g_i, W) = \frac{-\langle g_i, W\rangle}{\|g_i\|\,\|W\|_F}

from SAMPLES.weight_dot = <g_i, W> and SAMPLES.norm2 = |g_i|^2, and ||W|| the layer norm
(sqrt of the sum of squares of LAYERS.weight_norm over the layer's parameter rows). A
zero gradient has no a_i (NaN, left out of every mean; gradscope.analysis.cosines). The
model-level a_i uses the sums over layers of the dot and of the squared norms. The head
(the layer the paper scores) is an explicit argument.

The head's score is the paper's: over the head's ``weight`` parameter alone, bias
excluded, from SAMPLES.norm2_w / weight_dot_w and that parameter's LAYERS.weight_norm
(``gwa_head``); the all-parameter score of the head layer (bias included) is
``gwa_head_all_params``. Runs recorded before the weight-only columns have only the
latter, and their ``gwa_head`` (and epoch score) falls back to it: SampleSummary's
``head_basis`` says which was used. Per-layer and model scores use all parameters.

Epoch score (the authors' code): mean(a) / (excess kurtosis(a) + 1.2) over every head
score gathered during the epoch, kurtosis the biased Fisher estimator
(scipy.stats.kurtosis defaults), here from central moments merged batch by batch
(gradscope.analysis.central_moments), so a run's scores are never held whole. The
early-stop point is the epoch of the highest score.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from gradscope.analysis.central_moments import CentralMoments
from gradscope.analysis.coherence import concat_rows, tidy
from gradscope.analysis.cosines import cosine
from gradscope.analysis.thresholds import GWA_DROP, MIN_EPOCHS
from gradscope.analysis.types import NOT_RECORDED, TOO_FEW_EPOCHS, Verdict, no_data

if TYPE_CHECKING:
    from gradscope.analysis.samples import SampleSummary

DENOMINATOR_GUARD = 1e-6
DEFAULT_WINDOW = 100  # steps per "epoch" when no step -> epoch mapping is given


def excess_kurtosis(values: np.ndarray) -> float:
    """Biased Fisher kurtosis m4 / m2^2 - 3 (scipy.stats.kurtosis defaults); NaN if m2 = 0.

    >>> excess_kurtosis(np.array([-1.0, 1.0]))
    -2.0
    """
    return CentralMoments.of(values).excess_kurtosis


def epoch_score(scores: np.ndarray) -> float:
    """GWA epoch score mean(a) / (kurtosis(a) + 1.2) of the finite ``scores``.

    >>> round(epoch_score(np.array([0.0, 0.1, 0.1, 0.2])), 6)
    0.5
    """
    scores = np.asarray(scores, dtype=np.float64)
    return score_of_moments(CentralMoments.of(scores[np.isfinite(scores)]))


def score_of_moments(moments: CentralMoments) -> float:
    """The epoch score from the epoch's central moments, guarded near a zero denominator.

    The denominator is 0 for a uniform distribution (excess kurtosis -1.2); when
    |kurtosis + 1.2| < 1e-6 it is replaced by 1e-6 with its sign. NaN for fewer than two
    scores or constant scores.
    """
    if moments.n < 2:
        return np.nan
    denominator = moments.excess_kurtosis + 1.2
    if abs(denominator) < DENOMINATOR_GUARD:
        denominator = DENOMINATOR_GUARD if denominator >= 0 else -DENOMINATOR_GUARD
    return float(moments.mean / denominator)


def gwa(weight_dot: np.ndarray, norm2: np.ndarray, weight_norm: np.ndarray) -> np.ndarray:
    """a_i = -<g_i, W> / (|g_i| ||W||), elementwise (NaN for a zero gradient or weight)."""
    return cosine(-np.asarray(weight_dot, dtype=np.float64), norm2, np.square(weight_norm))


def epochs_of(steps: pd.Series, epochs: Mapping[int, int] | None, window: int) -> pd.Series:
    """Epoch per step: the mapping when given (unmapped steps drop as NaN), else step // window."""
    if epochs is not None:
        return steps.map(epochs).astype(float)
    return steps // window


def sample_keys(frame: pd.DataFrame) -> pd.Series:
    """"step:micro:sample", followed by " #<dataset index>" when SAMPLES.index knows it."""
    keys = frame["step"].astype(str) + ":" + frame["micro"].astype(str) + ":" + frame["sample"].astype(str)
    if "index" not in frame:
        return keys
    index = frame["index"].fillna(-1).astype(np.int64)
    return keys.where(index < 0, keys + " #" + index.astype(str))


def _misaligned_rows(worst: pd.DataFrame) -> pd.DataFrame:
    """The most misaligned samples (lowest head scores), scope sample."""
    keyed = worst.assign(key=sample_keys(worst).to_numpy())
    return tidy(keyed, "misaligned", "gwa", scope="sample", key="key")


def _epoch_rows(head_epochs: Mapping[int, CentralMoments]) -> pd.DataFrame:
    """alignment.epoch_score per epoch and alignment.early_stop_epoch (step -1)."""
    epochs = sorted(head_epochs)
    scores = pd.Series([score_of_moments(head_epochs[e]) for e in epochs], index=epochs, dtype=float)
    frame = pd.DataFrame({"step": -1, "epoch": epochs, "value": scores.to_numpy()})
    parts = [tidy(frame, "epoch_score", "value", scope="epoch", key="epoch")]
    if scores.notna().any():
        best = pd.DataFrame({"step": [-1], "value": [float(scores.idxmax())]})
        parts.append(tidy(best, "early_stop_epoch", "value"))
    return concat_rows(parts)


def alignment_metrics(summary: SampleSummary | None) -> pd.DataFrame:
    """All alignment rows: gwa (per-step mean, model and layers), gwa_head (the paper's:
    the head's weight alone), gwa_head_all_params, epoch_score, early_stop_epoch,
    misaligned (the lowest head scores, keyed "step:micro:sample #index")."""
    if summary is None or not len(summary.gwa):
        return concat_rows([])
    means = summary.gwa
    parts = [
        tidy(means[means["layer"] == ""], "gwa", "gwa"),
        tidy(means[means["layer"] != ""], "gwa", "gwa", scope="layer", key="layer"),
    ]
    if summary.head is not None and (means["layer"] == summary.head).any():
        whole = means[means["layer"] == summary.head]
        paper = summary.head_weight if len(summary.head_weight) else whole
        parts += [tidy(paper, "gwa_head", "gwa"), tidy(whole, "gwa_head_all_params", "gwa")]
        parts += [_epoch_rows(summary.head_epochs), _misaligned_rows(summary.misaligned)]
    return concat_rows(parts)


def alignment_verdict(rows: pd.DataFrame, *, drop: float = GWA_DROP) -> Verdict:
    """Warn when the last epoch's score is below the best by more than 10% of |best|.

    Hölzl et al. (2025) use the peak of the epoch score as the early-stopping point:
    a score that has fallen from its peak says generalisation stopped improving. It
    needs MIN_EPOCHS (2) epoch scores; with fewer the verdict is "no data".
    """
    source = "Hölzl et al. 2025 (GWA epoch score peak = early-stop point)"
    scores = rows[rows["name"] == "epoch_score"].dropna(subset=["value"])
    if not len(rows.dropna(subset=["value"])):
        return no_data("alignment", NOT_RECORDED, "per-sample gradient-weight dots not recorded", source)
    if len(scores) < MIN_EPOCHS:
        why = f"the GWA epoch score needs {MIN_EPOCHS} epochs; the run has {len(scores)}"
        return no_data("alignment", TOO_FEW_EPOCHS, why, source)
    scores = scores.assign(epoch=scores["key"].astype(int)).sort_values("epoch")
    best = scores.loc[scores["value"].idxmax()]
    last = scores.iloc[-1]
    limit = float(best["value"]) - drop * abs(float(best["value"]))
    common = {"metric": "alignment.epoch_score", "value": float(last["value"]), "source": source}
    if float(last["value"]) < limit:
        summary = f"GWA epoch score peaked at epoch {best['epoch']}: consider stopping there"
        details = (f"best {float(best['value']):.4g}, last {float(last['value']):.4g}",)
        return Verdict("alignment", "warn", summary, threshold=limit, details=details, **common)
    summary = f"GWA epoch score still near its best (epoch {best['epoch']})"
    return Verdict("alignment", "ok", summary, threshold=limit, **common)
