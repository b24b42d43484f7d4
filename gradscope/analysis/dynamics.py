r"""Per-sample learning dynamics from SAMPLES.loss and SAMPLES.index (Toneva et al. 2019,
"An Empirical Study of Example Forgetting during Deep Neural Network Learning").

A presentation is a recorded step in which a sample with a known dataset index
(``index`` >= 0) and a finite per-sample loss appears. Toneva et al. call a sample
learned at a presentation when it is classified correctly; SAMPLES has the loss, not
the prediction, so here a sample is **learned when its loss is below** ``threshold``,
by default ln 2: for a cross-entropy loss, loss < ln 2 means p(label) > 1/2, which
implies the label is the argmax (learned is then "correct with a margin"; a correct
sample with p(label) <= 1/2 counts as not learned). For other losses pass a threshold
in the loss's own units.

- forgetting event: a presentation that is not learned right after one that was
  (learned -> not learned), counted per dataset index;
- first_learned: the step of the sample's first learned presentation (NaN: never);
- loss percentiles per step (p10, p50, p90 of the step's per-sample losses, every
  sample with a finite loss, with or without an index);
- flagged samples (candidate noisy labels): seen at least twice and never learned,
  highest mean loss first, then the most forgotten; at most ``worst`` of them.

Only recorded steps are presentations: a run recorded every N steps misses events in
between (each count is a lower bound), and so does a step left out because a per-sample
gradient overflowed (gradscope.analysis.samples leaves such steps out of every family).
Memory: a fixed set of numbers per dataset index (sorted arrays, merged batch by batch)
and a few numbers per step, never the losses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gradscope.analysis.coherence import concat_rows, tidy

LEARNED_LOSS = math.log(2.0)  # cross-entropy below ln 2: p(label) > 1/2, so correctly classified
FLAGGED_SAMPLES = 20
TOTALS = ("samples_seen", "never_learned", "forgotten_samples", "forgetting_events")
_STATE = ("seen", "learned_count", "forgotten", "first_learned", "last_learned", "loss_sum")


@dataclass
class LearningDynamics:
    """Streams (step, index, loss) observations in non-decreasing step order."""

    threshold: float = LEARNED_LOSS
    worst: int = FLAGGED_SAMPLES
    _ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    _state: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _steps: list[pd.DataFrame] = field(default_factory=list, repr=False)
    _forgets: list[pd.DataFrame] = field(default_factory=list, repr=False)

    def add(self, step: np.ndarray, index: np.ndarray, loss: np.ndarray) -> None:
        """One observation per sample presentation, whole steps at a time, steps after those
        already added (duplicates of a (step, index) are averaged)."""
        step, index = np.asarray(step, dtype=np.int64), np.asarray(index, dtype=np.int64)
        loss = np.asarray(loss, dtype=np.float64)
        finite = np.isfinite(loss)
        step, index, loss = step[finite], index[finite], loss[finite]
        if not len(loss):
            return
        self._steps.append(_step_summary(step, loss, self.threshold))
        known = index >= 0
        if known.any():
            frame = pd.DataFrame({"step": step[known], "index": index[known], "loss": loss[known]})
            self._update(frame.groupby(["index", "step"], as_index=False, sort=True)["loss"].mean())

    def _update(self, obs: pd.DataFrame) -> None:
        """Merge observations sorted by (index, step) into the per-index state."""
        self._grow(obs["index"].to_numpy())
        ids, state = self._ids, self._state
        where = np.searchsorted(ids, obs["index"].to_numpy())
        learned = obs["loss"].to_numpy() < self.threshold
        steps = obs["step"].to_numpy()
        first_of_index = np.r_[True, where[1:] != where[:-1]]
        previous = np.where(first_of_index, state["last_learned"][where] > 0, np.r_[False, learned[:-1]])
        forgot = previous & ~learned
        events = np.unique(steps[forgot], return_counts=True)
        self._forgets.append(pd.DataFrame({"step": events[0], "events": events[1].astype(float)}))
        np.add.at(state["forgotten"], where, forgot)
        np.add.at(state["seen"], where, 1.0)
        np.add.at(state["learned_count"], where, learned)
        np.add.at(state["loss_sum"], where, obs["loss"].to_numpy())
        firsts = pd.Series(np.where(learned, steps, np.inf)).groupby(where).min()
        positions = firsts.index.to_numpy()
        state["first_learned"][positions] = np.fmin(state["first_learned"][positions], firsts.to_numpy())
        last = np.r_[where[1:] != where[:-1], True]
        state["last_learned"][where[last]] = learned[last]
        self._ids, self._state = ids, state

    def _grow(self, index: np.ndarray) -> None:
        """Insert the indices not seen before into the sorted state (O(N) copies per call,
        none when every index is known)."""
        new = np.unique(index)
        if len(self._ids):
            position = np.minimum(np.searchsorted(self._ids, new), len(self._ids) - 1)
            new = new[self._ids[position] != new]
        if not len(new):
            return
        at = np.searchsorted(self._ids, new)
        for name in _STATE:
            start = np.inf if name == "first_learned" else 0.0
            self._state[name] = np.insert(self._state.get(name, np.zeros(0)), at, start)
        self._ids = np.insert(self._ids, at, new)

    def rows(self) -> pd.DataFrame:
        """Metric rows (step, name, scope, key, value); see the module docstring."""
        if not self._steps:
            return concat_rows([])
        per_step = pd.concat(self._steps, ignore_index=True)
        per_step["learned_fraction"] = per_step["learned"] / per_step["count"]
        parts = [tidy(per_step, n, n) for n in ("loss_p10", "loss_p50", "loss_p90", "learned_fraction")]
        if len(self._ids):
            events = pd.concat(self._forgets).groupby("step", as_index=False)["events"].sum()
            events = per_step[["step"]].merge(events, on="step", how="left").fillna({"events": 0.0})
            parts += [tidy(events, "forgetting_events", "events"), *self._index_rows()]
        return concat_rows(parts)

    def _index_rows(self) -> list[pd.DataFrame]:
        """Whole-run totals (step -1, model) and the flagged samples (scope index)."""
        state = self._state
        frame = pd.DataFrame({
            "step": -1, "key": self._ids.astype(str), "forgetting_events": state["forgotten"],
            "first_learned": np.where(np.isfinite(state["first_learned"]), state["first_learned"], np.nan),
            "mean_loss": state["loss_sum"] / state["seen"], "seen": state["seen"],
            "learned_count": state["learned_count"],
        })
        never = frame[(frame["learned_count"] == 0) & (frame["seen"] >= 2)]
        forgotten = frame[frame["forgetting_events"] > 0]
        flagged = pd.concat([
            never.sort_values("mean_loss", ascending=False),
            forgotten.sort_values(["forgetting_events", "mean_loss"], ascending=False),
        ]).drop_duplicates("key").head(self.worst)
        flagged = flagged.assign(flagged=np.arange(1, len(flagged) + 1, dtype=float))  # the rank
        totals = pd.DataFrame({
            "step": [-1], "samples_seen": [len(frame)],
            "never_learned": [int((frame["learned_count"] == 0).sum())],
            "forgotten_samples": [int((frame["forgetting_events"] > 0).sum())],
            "forgetting_events": [float(frame["forgetting_events"].sum())],
        })
        parts = [tidy(totals, n, n) for n in TOTALS]
        names = ("flagged", "forgetting_events", "first_learned", "mean_loss")
        return parts + [tidy(flagged, n, n, scope="index", key="key") for n in names]


def _step_summary(step: np.ndarray, loss: np.ndarray, threshold: float) -> pd.DataFrame:
    """Per step: the loss percentiles, the number of losses and of learned ones."""
    frame = pd.DataFrame({"step": step, "loss": loss})
    grouped = frame.groupby("step")["loss"]
    out = grouped.quantile([0.1, 0.5, 0.9]).unstack()
    out.columns = ["loss_p10", "loss_p50", "loss_p90"]
    out["count"] = grouped.size()
    out["learned"] = (frame["loss"] < threshold).groupby(frame["step"]).sum()
    return out.reset_index()
