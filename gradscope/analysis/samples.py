"""The samples table reduced, batch by batch, to the small summaries the families read.

SAMPLES holds one row per (step, micro, sample, layer): a million rows for a short run
of a small model, far more for a long one. No metric family needs it whole:

- coherence and noise: S2 = sum_i |g_i|^2 per (step, layer) and m, the samples per step;
- noise: the sketch moments per (step, layer) (gradscope.analysis.sketches);
- alignment: the mean GWA per (step, layer) and for the model, the head's central
  moments per epoch (the epoch score), its lowest scores (the most misaligned samples)
  and a bounded random sample of its scores per epoch (the distribution plot);
- stiffness by group and group conflict: each sample's group label, kept only when
  the script labelled groups.

``SampleReducer`` takes the table in record batches in the order the recorder wrote
them (one rank; steps never decrease) and reduces whole steps only, because the
model-level GWA of a sample sums over all its layers: the rows of each batch's last step
wait for the next batch. Rows that go back to an earlier step are refused (the summary's
``problem``), never reduced into partial sums. Memory: one step's rows, the per-(step,
layer) results, and the group labels when there are any.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from gradscope.analysis import sketches
from gradscope.analysis.alignment import DEFAULT_WINDOW, epochs_of, sample_alignment
from gradscope.analysis.central_moments import CentralMoments
from gradscope.analysis.coherence import has_columns, layer_sums

WORST_SAMPLES = 20  # most misaligned samples kept
PLOT_SAMPLES_PER_EPOCH = 2048  # head scores kept per epoch for the distribution plot
_ALIGNMENT_COLUMNS = ("step", "micro", "sample", "layer", "norm2", "weight_dot")


@dataclass
class SampleSummary:
    """What the metric families read of SAMPLES (see the module docstring)."""

    s2: pd.DataFrame  # step, layer, s2
    counts: pd.DataFrame  # step, m (distinct (micro, sample) pairs)
    sketch_moments: pd.DataFrame  # sketches.MOMENT_COLUMNS
    gwa: pd.DataFrame  # step, layer, gwa (mean a_i; layer "" is the model)
    head: str | None  # the layer scored as the output head
    head_epochs: dict[int, CentralMoments]  # epoch -> moments of the head's a_i
    misaligned: pd.DataFrame  # step, micro, sample, gwa: the lowest head a_i
    head_sample: pd.DataFrame  # epoch, gwa: a uniform random sample of head a_i per epoch
    groups: dict[tuple[int, int], np.ndarray]  # (step, micro) -> group label per sample index
    problem: str | None = None  # why the summary is unusable, when it is


@dataclass
class SampleReducer:
    """Reduces SAMPLES record batches (or DataFrames) to a ``SampleSummary``.

    ``layers`` (the LAYERS table) gives ||W|| for GWA; without it there is no alignment.
    ``epochs`` maps step -> epoch; unmapped runs use ``step // window``. The random
    sample for plots is drawn with a fixed seed, so reports are reproducible.
    """

    layers: pd.DataFrame | None = None
    head: str | None = None
    epochs: Mapping[int, int] | None = None
    window: int = DEFAULT_WINDOW
    worst: int = WORST_SAMPLES
    _pending: pd.DataFrame | None = field(default=None, repr=False)
    _last_step: float = field(default=-np.inf, repr=False)
    _parts: dict[str, list[pd.DataFrame]] = field(default_factory=dict, repr=False)
    _head_epochs: dict[int, CentralMoments] = field(default_factory=dict, repr=False)
    _groups: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)
    _problem: str | None = field(default=None, repr=False)
    _rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0), repr=False)

    def __post_init__(self) -> None:
        usable = has_columns(self.layers, "step", "layer", "weight_norm")
        self._weights = layer_sums(self.layers)[["step", "layer", "weight_norm"]] if usable else None

    def add(self, batch: pa.RecordBatch | pd.DataFrame) -> None:
        """Take the next rows of the table, in recorded order."""
        if self._problem is not None or not len(batch):
            return
        if isinstance(batch, pd.DataFrame):
            batch = pa.RecordBatch.from_pandas(batch, preserve_index=False)
        if "sketch" in batch.schema.names:
            batch, moments = sketches.split(batch)
            self._collect("sketch", moments)
        frame = batch.to_pandas()
        if self._pending is not None:
            frame = pd.concat([self._pending, frame], ignore_index=True)
        last = frame["step"].to_numpy() == frame["step"].iloc[-1]
        self._pending = frame[last]
        self._reduce(frame[~last])

    def finish(self) -> SampleSummary:
        """The summary of every row added."""
        if self._pending is not None:
            self._reduce(self._pending)
            self._pending = None
        return SampleSummary(
            s2=self._frame("s2", ["step", "layer", "s2"]),
            counts=self._frame("counts", ["step", "m"]),
            sketch_moments=sketches.combine(self._parts.get("sketch", [])),
            gwa=self._frame("gwa", ["step", "layer", "gwa"]),
            head=self.head,
            head_epochs=dict(sorted(self._head_epochs.items())),
            misaligned=self._frame("misaligned", ["step", "micro", "sample", "gwa"]),
            head_sample=self._frame("head_sample", ["epoch", "gwa", "key"])[["epoch", "gwa"]],
            groups=self._groups,
            problem=self._problem,
        )

    def _reduce(self, rows: pd.DataFrame) -> None:
        """Reduce rows that hold whole steps, in non-decreasing step order."""
        if not len(rows):
            return
        steps = rows["step"].to_numpy()
        if steps[0] <= self._last_step or (np.diff(steps) < 0).any():
            self._problem = "samples rows are not in step order; per-sample metrics left out"
            return
        self._last_step = steps[-1]
        if "norm2" in rows:
            self._collect("s2", rows.groupby(["step", "layer"], as_index=False)["norm2"].sum()
                          .rename(columns={"norm2": "s2"}))
        if has_columns(rows, "micro", "sample"):
            distinct = rows[["step", "micro", "sample"]].drop_duplicates()
            self._collect("counts", distinct.groupby("step").size().rename("m").reset_index())
        if has_columns(rows, "micro", "sample", "group"):
            self._add_groups(rows)
        if self._weights is not None and has_columns(rows, *_ALIGNMENT_COLUMNS):
            self._add_alignment(rows)

    def _add_groups(self, rows: pd.DataFrame) -> None:
        labels = rows[["step", "micro", "sample", "group"]].drop_duplicates(["step", "micro", "sample"])
        if not (labels["group"] >= 0).any():
            return
        for (step, micro), block in labels.groupby(["step", "micro"]):
            self._groups[int(step), int(micro)] = block.sort_values("sample")["group"].to_numpy()

    def _add_alignment(self, rows: pd.DataFrame) -> None:
        scores = sample_alignment(rows, self._weights)
        self._collect("gwa", scores.groupby(["step", "layer"], as_index=False)["gwa"].mean())
        head = scores[(scores["layer"] == self.head) & np.isfinite(scores["gwa"])]
        if self.head is None or not len(head):
            return
        self._keep("misaligned", head[["step", "micro", "sample", "gwa"]], self._lowest)
        head = head.assign(epoch=epochs_of(head["step"], self.epochs, self.window)).dropna(subset=["epoch"])
        head = head.assign(epoch=head["epoch"].astype(int), key=self._rng.random(len(head)))
        for epoch, block in head.groupby("epoch"):
            moments = CentralMoments.of(block["gwa"].to_numpy())
            self._head_epochs[epoch] = self._head_epochs.get(epoch, CentralMoments()).merge(moments)
        self._keep("head_sample", head[["epoch", "gwa", "key"]], _bottom_keys)

    def _keep(self, name: str, frame: pd.DataFrame, select: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
        """Replace the kept rows ``name`` by ``select`` of them and ``frame`` together."""
        self._collect(name, select(pd.concat([*self._parts.pop(name, []), frame], ignore_index=True)))

    def _lowest(self, scores: pd.DataFrame) -> pd.DataFrame:
        return scores.nsmallest(self.worst, "gwa") if len(scores) else scores

    def _collect(self, name: str, frame: pd.DataFrame) -> None:
        self._parts.setdefault(name, []).append(frame)

    def _frame(self, name: str, columns: list[str]) -> pd.DataFrame:
        parts = [p for p in self._parts.get(name, []) if len(p)]
        if not parts:
            return empty_frame(columns)
        return pd.concat(parts, ignore_index=True)[columns]


def empty_frame(columns: list[str]) -> pd.DataFrame:
    """No rows; float columns, so arithmetic and plotting on it work unchanged."""
    return pd.DataFrame({column: pd.Series(dtype=float) for column in columns})


def _bottom_keys(scores: pd.DataFrame) -> pd.DataFrame:
    """Per epoch, the rows with the PLOT_SAMPLES_PER_EPOCH smallest random keys: a uniform
    sample without replacement that stays uniform as batches merge (bottom-k sampling)."""
    ordered = scores.sort_values(["epoch", "key"])
    return ordered[ordered.groupby("epoch").cumcount() < PLOT_SAMPLES_PER_EPOCH]


def summarize(samples: pd.DataFrame, **options: Any) -> SampleSummary:
    """The summary of a whole SAMPLES DataFrame (sorted by step first); ``options`` are
    SampleReducer's (layers, head, epochs, window, worst)."""
    reducer = SampleReducer(**options)
    reducer.add(samples.sort_values("step", kind="stable", ignore_index=True))
    return reducer.finish()
