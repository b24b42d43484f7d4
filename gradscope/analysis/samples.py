"""The samples table reduced, batch by batch, to the small summaries the families read.

SAMPLES holds one row per (step, micro, sample, layer): a million rows for a short run
of a small model, far more for a long one. No metric family needs it whole:

- coherence and noise: S2 = sum_i |g_i|^2 per (step, layer) and m, the samples per step;
- noise: the sketch moments per (step, layer) (gradscope.analysis.sketches);
- micro-batch distance and group conflict without GRAM: sketch sums per (step, layer,
  micro) for steps with several micro-batches, and per (step, layer, group) when the
  script labelled groups (``sketches.sums_by``);
- alignment: the mean GWA per (step, layer) and for the model, the head's central
  moments per epoch (the epoch score), its lowest scores (the most misaligned samples,
  with their dataset indices when SAMPLES.index has them) and a bounded random sample of
  its scores per epoch (the distribution plot). The head is scored as the paper does, over
  its ``weight`` alone (SAMPLES.norm2_w / weight_dot_w and that parameter's LAYERS
  weight_norm), when every head row of a step has them; else over all its parameters
  (runs recorded before those columns), and ``head_basis`` says which;
- per-sample learning dynamics: each sample's loss under its dataset index
  (gradscope.analysis.dynamics keeps a few numbers per index);
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
import pyarrow.compute as pc

from gradscope.analysis import sketches
from gradscope.analysis.alignment import DEFAULT_WINDOW, epochs_of, gwa
from gradscope.analysis.central_moments import CentralMoments
from gradscope.analysis.coherence import has_columns, layer_sums
from gradscope.analysis.dynamics import LEARNED_LOSS, LearningDynamics

WORST_SAMPLES = 20  # most misaligned samples kept
PLOT_SAMPLES_PER_EPOCH = 2048  # head scores kept per epoch for the distribution plot
_SUM_ORDER = ["step", "layer", "part"]
_OUT_OF_ORDER = "samples rows are not in step order; per-sample metrics left out"


@dataclass
class SampleSummary:
    """What the metric families read of SAMPLES (see the module docstring)."""

    s2: pd.DataFrame  # step, layer, s2
    counts: pd.DataFrame  # step, m (distinct (micro, sample) pairs)
    sketch_moments: pd.DataFrame  # sketches.MOMENT_COLUMNS
    gwa: pd.DataFrame  # step, layer, gwa (mean a_i; layer "" is the model)
    head: str | None  # the layer scored as the output head
    head_epochs: dict[int, CentralMoments]  # epoch -> moments of the head's a_i
    misaligned: pd.DataFrame  # step, micro, sample, index, gwa: the lowest head a_i (index -1 unknown)
    head_sample: pd.DataFrame  # epoch, gwa: a uniform random sample of head a_i per epoch
    groups: dict[tuple[int, int], np.ndarray]  # (step, micro) -> group label per sample index
    problem: str | None = None  # why the summary is unusable, when it is
    # step, rows: steps left out because a sample's norm2, weight_dot or sketch was inf/NaN
    nonfinite: pd.DataFrame = field(default_factory=lambda: empty_frame(["step", "rows"]))
    # sketches.SUM_COLUMNS (layer a name; part the micro index or the group label)
    micro_sketch: pd.DataFrame = field(default_factory=lambda: empty_frame(list(sketches.SUM_COLUMNS)))
    group_sketch: pd.DataFrame = field(default_factory=lambda: empty_frame(list(sketches.SUM_COLUMNS)))
    dynamics: pd.DataFrame = field(default_factory=lambda: LearningDynamics().rows())  # metric rows
    # step, gwa: mean head a_i over the head's weight alone (Hölzl et al.'s score); empty when
    # the run lacks the weight-only columns. head_basis: "weight", "all parameters" or "mixed"
    head_weight: pd.DataFrame = field(default_factory=lambda: empty_frame(["step", "gwa"]))
    head_basis: str = ""


@dataclass
class SampleReducer:
    """Reduces SAMPLES record batches (or DataFrames) to a ``SampleSummary``.

    ``layers`` (the LAYERS table) gives ||W|| for GWA; without it there is no alignment.
    ``epochs`` maps step -> epoch; unmapped runs use ``step // window``. The random
    sample for plots is drawn with a fixed seed, so reports are reproducible. Rows are
    grouped on integer keys (layers coded once per batch), never on strings.
    """

    layers: pd.DataFrame | None = None
    head: str | None = None
    epochs: Mapping[int, int] | None = None
    window: int = DEFAULT_WINDOW
    worst: int = WORST_SAMPLES
    learned_loss: float = LEARNED_LOSS  # a sample is "learned" below this loss (analysis.dynamics)
    _pending: pa.Table | None = field(default=None, repr=False)
    _last_step: float = field(default=-np.inf, repr=False)
    _names: list[str] = field(default_factory=list, repr=False)
    _codes: dict[str, int] = field(default_factory=dict, repr=False)
    _parts: dict[str, list[pd.DataFrame]] = field(default_factory=dict, repr=False)
    _head_epochs: dict[int, CentralMoments] = field(default_factory=dict, repr=False)
    _groups: dict[tuple[int, int], np.ndarray] = field(default_factory=dict, repr=False)
    _problem: str | None = field(default=None, repr=False)
    _rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0), repr=False)

    def __post_init__(self) -> None:
        self._dynamics = LearningDynamics(threshold=self.learned_loss)
        self._weights: tuple[np.ndarray, np.ndarray] | None = None
        self._weight_only: tuple[np.ndarray, np.ndarray] | None = None  # the "weight" parameter's norm
        self._bases: set[str] = set()
        if has_columns(self.layers, "step", "layer", "weight_norm"):
            self._weights = self._lookup(layer_sums(self.layers))
        if has_columns(self.layers, "step", "layer", "param", "weight_norm"):
            weight = self.layers[self.layers["param"].astype(str).str.rpartition(".")[2] == "weight"]
            if len(weight):
                self._weight_only = self._lookup(weight.drop_duplicates(["step", "layer"]))

    def _lookup(self, norms: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Sorted (step, layer) keys and their weight norms."""
        codes = self._code_of(norms["layer"].to_numpy(object))
        keys = _cell_keys(norms["step"].to_numpy(np.int64), codes)
        order = np.argsort(keys)
        return keys[order], norms["weight_norm"].to_numpy(np.float64)[order]

    def add(self, batch: pa.RecordBatch | pa.Table | pd.DataFrame) -> None:
        """Take the next rows of the table, in recorded order."""
        if self._problem is not None or not len(batch):
            return
        if isinstance(batch, pd.DataFrame):
            batch = pa.Table.from_pandas(batch, preserve_index=False)
        rows = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        missing = {"step", "layer"} - set(rows.schema.names)
        if missing:
            self._problem = f"samples rows lack {sorted(missing)}; per-sample metrics left out"
            return
        if self._pending is not None:
            rows = pa.concat_tables([self._pending, rows])
        steps = rows.column("step").to_numpy()
        if (np.diff(steps) < 0).any():
            self._problem = _OUT_OF_ORDER
            return
        whole = int(np.searchsorted(steps, steps[-1]))  # rows before the last step's first
        self._pending = rows.slice(whole)
        self._reduce(rows.slice(0, whole))

    def finish(self) -> SampleSummary:
        """The summary of every row added."""
        if self._pending is not None:
            self._reduce(self._pending)
            self._pending = None
        return SampleSummary(
            s2=self._frame("s2", ["step", "layer", "s2"], by=["step", "layer"]),
            counts=self._frame("counts", ["step", "m"], by=["step"]),
            sketch_moments=self._frame("sketch", list(sketches.MOMENT_COLUMNS), by=["step", "layer"]),
            gwa=self._frame("gwa", ["step", "layer", "gwa"], by=["step", "layer"]),
            head=self.head,
            head_epochs=dict(sorted(self._head_epochs.items())),
            misaligned=self._frame("misaligned", ["step", "micro", "sample", "index", "gwa"]),
            head_sample=self._frame("head_sample", ["epoch", "gwa", "key"])[["epoch", "gwa"]],
            groups=self._groups,
            problem=self._problem,
            nonfinite=self._frame("nonfinite", ["step", "rows"], by=["step"]),
            micro_sketch=self._frame("micro_sketch", list(sketches.SUM_COLUMNS), by=_SUM_ORDER),
            group_sketch=self._frame("group_sketch", list(sketches.SUM_COLUMNS), by=_SUM_ORDER),
            dynamics=self._dynamics.rows(),
            head_weight=self._frame("head_weight", ["step", "gwa"], by=["step"]),
            head_basis="mixed" if len(self._bases) > 1 else next(iter(self._bases), ""),
        )

    def _reduce(self, table: pa.Table) -> None:
        """Reduce rows that hold whole steps, in non-decreasing step order."""
        if not len(table):
            return
        if table.column("step")[0].as_py() <= self._last_step:
            self._problem = _OUT_OF_ORDER
            return
        self._last_step = table.column("step")[len(table) - 1].as_py()
        table = self._finite_steps(table)
        if not len(table):
            return
        self._add_losses(table)
        step = table.column("step").to_numpy().astype(np.int64)
        layer = self._layer_codes(table.column("layer"))
        cells, (cell_step, cell_layer) = _group(step, layer)
        labels = cell_step, np.asarray(self._names, dtype=object)[cell_layer]
        keep, values = None, None
        if "sketch" in table.schema.names:
            table, keep, values = sketches.split(table)
            self._collect("sketch", sketches.moments(*labels, cells[keep], values))
        column = {name: table.column(name).to_numpy() for name in table.schema.names if name != "layer"}
        if keep is not None and keep.any():
            self._add_sketch_sums(step[keep], layer[keep], {k: v[keep] for k, v in column.items()}, values)
        if "norm2" in column:
            self._collect("s2", _cell_frame(labels, s2=np.bincount(cells, column["norm2"], len(cell_step))))
        if "micro" not in column or "sample" not in column:
            return
        samples, (sample_step, sample_micro, sample_index) = _group(step, column["micro"], column["sample"])
        present, m = np.unique(sample_step, return_counts=True)
        self._collect("counts", pd.DataFrame({"step": present, "m": m}))
        if "group" in column and (column["group"] >= 0).any():
            first = np.unique(samples, return_index=True)[1]
            self._add_groups(sample_step, sample_micro, sample_index, column["group"][first])
        if self._weights is not None and "weight_dot" in column and "norm2" in column:
            self._add_alignment(step, layer, (labels, cells), (samples, sample_step), column)

    def _add_losses(self, table: pa.Table) -> None:
        """Each sample's loss and dataset index (-1 unknown), once per (step, micro,
        sample), to the learning dynamics; nothing when no loss is known."""
        names = set(table.schema.names)
        if not {"loss", "micro", "sample"} <= names:
            return
        loss = pc.fill_null(table.column("loss"), np.nan).to_numpy(zero_copy_only=False).astype(np.float64)
        if not np.isfinite(loss).any():
            return
        keys = np.stack([table.column(n).to_numpy().astype(np.int64) for n in ("step", "micro", "sample")], 1)
        first = np.unique(keys, axis=0, return_index=True)[1]
        index = np.full(len(table), -1, dtype=np.int64)
        if "index" in names:
            index = pc.fill_null(table.column("index"), -1).to_numpy(zero_copy_only=False).astype(np.int64)
        self._dynamics.add(keys[first, 0], index[first], loss[first])

    def _add_sketch_sums(
        self, step: np.ndarray, layer: np.ndarray, column: dict[str, np.ndarray], values: np.ndarray
    ) -> None:
        """Sketch sums per micro-batch (steps with more than one) and per group (labelled
        rows), the rows restricted to those with a usable sketch (``sketches.sums_by``)."""
        names = np.asarray(self._names, dtype=object)
        if "micro" in column:
            micro = column["micro"].astype(np.int64)
            pairs = np.unique(np.stack([step, micro], axis=1), axis=0)
            present, micros = np.unique(pairs[:, 0], return_counts=True)
            chosen = np.isin(step, present[micros > 1])
            if chosen.any():
                sums = sketches.sums_by(step[chosen], layer[chosen], micro[chosen], values[chosen])
                self._collect("micro_sketch", sums.assign(layer=names[sums["layer"].to_numpy(np.int64)]))
        if "group" in column and (column["group"] >= 0).any():
            chosen = column["group"] >= 0
            sums = sketches.sums_by(step[chosen], layer[chosen], column["group"][chosen], values[chosen])
            self._collect("group_sketch", sums.assign(layer=names[sums["layer"].to_numpy(np.int64)]))

    def _finite_steps(self, table: pa.Table) -> pa.Table:
        """``table`` without the steps in which any row's norm2, weight_dot or sketch is
        inf or NaN (a sample whose gradient overflowed): their S2, GWA and sketch moments
        would be inf or NaN. The steps left out and their bad rows are kept in
        ``nonfinite`` for the stability family, which names them."""
        bad = np.zeros(len(table), dtype=bool)
        for name in ("norm2", "weight_dot"):
            if name in table.schema.names:
                bad |= ~np.isfinite(table.column(name).to_numpy(zero_copy_only=False).astype(np.float64))
        sketch_type = table.schema.field("sketch").type if "sketch" in table.schema.names else None
        if sketch_type is not None and (pa.types.is_list(sketch_type) or pa.types.is_large_list(sketch_type)):
            lengths = pc.list_value_length(table.column("sketch")).fill_null(0).to_numpy()
            flat = pc.list_flatten(table.column("sketch")).to_numpy(zero_copy_only=False).astype(np.float64)
            row_of = np.repeat(np.arange(len(table)), lengths)
            bad |= np.bincount(row_of, ~np.isfinite(flat), len(table)) > 0
        if not bad.any():
            return table
        step = table.column("step").to_numpy().astype(np.int64)
        steps, rows = np.unique(step[bad], return_counts=True)
        self._collect("nonfinite", pd.DataFrame({"step": steps, "rows": rows}))
        return table.filter(pa.array(~np.isin(step, steps)))

    def _add_groups(self, step: np.ndarray, micro: np.ndarray, index: np.ndarray, group: np.ndarray) -> None:
        labels = pd.DataFrame({"step": step, "micro": micro, "sample": index, "group": group})
        for (step_value, micro_value), block in labels.groupby(["step", "micro"]):
            self._groups[int(step_value), int(micro_value)] = block.sort_values("sample")["group"].to_numpy()

    def _add_alignment(
        self,
        step: np.ndarray,
        layer: np.ndarray,
        by_cell: tuple[tuple[np.ndarray, np.ndarray], np.ndarray],
        by_sample: tuple[np.ndarray, np.ndarray],
        column: dict[str, np.ndarray],
    ) -> None:
        """a_i per row and per sample (sums over its layers), averaged per (step, layer),
        per step (layer ""), and the head's scores gathered per epoch. ``by_cell``: the
        (step, layer) labels and each row's cell; ``by_sample``: each row's sample group
        and each group's step."""
        (labels, cells), (samples, sample_step) = by_cell, by_sample
        keys, norms = self._weights
        position = np.clip(np.searchsorted(keys, _cell_keys(step, layer)), 0, len(keys) - 1)
        known = keys[position] == _cell_keys(step, layer)  # rows whose layer has a weight norm
        norm, dot, norm2 = norms[position][known], column["weight_dot"][known], column["norm2"][known]
        scores = gwa(dot, norm2, norm)
        self._collect("gwa", _cell_frame(labels, gwa=_mean(cells[known], scores, len(labels[0]))))
        per_sample, (sample_ids,) = _group(samples[known])
        sums = [np.bincount(per_sample, v, len(sample_ids)) for v in (dot, norm2, norm * norm)]
        model = gwa(sums[0], sums[1], np.sqrt(sums[2]))
        steps, by_step = np.unique(sample_step[sample_ids], return_inverse=True)
        means = _mean(by_step.ravel(), model, len(steps))
        self._collect("gwa", pd.DataFrame({"step": steps, "layer": "", "gwa": means}))
        if self.head not in self._codes:
            return
        head = layer[known] == self._codes[self.head]
        rows = {name: values[known][head] for name, values in column.items() if name != "sketch"}
        head_scores = self._head_scores(step[known][head], layer[known][head], rows)
        if head_scores is None:
            self._bases.add("all parameters")
            head_scores = scores[head]
        index = rows["index"].astype(np.float64) if "index" in rows else np.full(len(head_scores), -1.0)
        scored = pd.DataFrame({"step": rows["step"], "micro": rows["micro"], "sample": rows["sample"],
                               "index": np.nan_to_num(index, nan=-1).astype(np.int64), "gwa": head_scores})
        scored = scored[np.isfinite(head_scores)]
        self._keep("misaligned", scored, self._lowest)
        epochs = epochs_of(scored["step"], self.epochs, self.window)
        scored = scored.assign(epoch=epochs).dropna(subset=["epoch"])
        scored = scored.assign(epoch=scored["epoch"].astype(int), key=self._rng.random(len(scored)))
        for epoch, block in scored.groupby("epoch"):
            moments = CentralMoments.of(block["gwa"].to_numpy())
            self._head_epochs[epoch] = self._head_epochs.get(epoch, CentralMoments()).merge(moments)
        self._keep("head_sample", scored[["epoch", "gwa", "key"]], _bottom_keys)

    def _head_scores(
        self, step: np.ndarray, layer: np.ndarray, rows: dict[str, np.ndarray]
    ) -> np.ndarray | None:
        """The head's a_i over its weight alone (the paper's), or None when any head row
        lacks a weight-only value (then the all-parameter score stands in)."""
        if self._weight_only is None or "norm2_w" not in rows or "weight_dot_w" not in rows:
            return None
        keys, norms = self._weight_only
        cells = _cell_keys(step, layer)
        position = np.clip(np.searchsorted(keys, cells), 0, len(keys) - 1)
        norm2 = rows["norm2_w"].astype(np.float64)
        dot = rows["weight_dot_w"].astype(np.float64)
        if not (keys[position] == cells).all() or not (np.isfinite(norm2) & np.isfinite(dot)).all():
            return None
        scores = gwa(dot, norm2, norms[position])
        self._bases.add("weight")
        steps, by_step = np.unique(step, return_inverse=True)
        means = _mean(by_step.ravel(), scores, len(steps))
        self._collect("head_weight", pd.DataFrame({"step": steps, "gwa": means}))
        return scores

    def _layer_codes(self, names: pa.ChunkedArray) -> np.ndarray:
        """The code of each row's layer name, from one dictionary encoding of the column."""
        encoded = pc.dictionary_encode(names.combine_chunks())
        lookup = self._code_of(np.asarray(encoded.dictionary.to_pylist(), dtype=object))
        return lookup[encoded.indices.to_numpy()]

    def _code_of(self, names: np.ndarray) -> np.ndarray:
        for name in names:
            if name not in self._codes:
                self._codes[name] = len(self._names)
                self._names.append(name)
        return np.array([self._codes[name] for name in names], dtype=np.int64)

    def _keep(self, name: str, frame: pd.DataFrame, select: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
        """Replace the kept rows ``name`` by ``select`` of them and ``frame`` together."""
        self._collect(name, select(pd.concat([*self._parts.pop(name, []), frame], ignore_index=True)))

    def _lowest(self, scores: pd.DataFrame) -> pd.DataFrame:
        return scores.nsmallest(self.worst, "gwa") if len(scores) else scores

    def _collect(self, name: str, frame: pd.DataFrame) -> None:
        self._parts.setdefault(name, []).append(frame)

    def _frame(self, name: str, columns: list[str], by: list[str] | None = None) -> pd.DataFrame:
        """The collected rows ``name`` as one frame, sorted ``by`` when given."""
        parts = [p for p in self._parts.get(name, []) if len(p)]
        if not parts:
            return empty_frame(columns)
        frame = pd.concat(parts, ignore_index=True)[columns]
        return frame.sort_values(by, ignore_index=True) if by else frame


def _group(*columns: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Each row's group index among the distinct rows of the integer ``columns``, and
    those distinct rows (sorted), one array per column."""
    lows = [int(c.min()) if len(c) else 0 for c in columns]
    sizes = [int(c.max()) - low + 1 if len(c) else 1 for c, low in zip(columns, lows)]
    if np.prod([float(size) for size in sizes]) >= 2.0**62:
        raise ValueError("samples keys span too wide a range to group")
    key = np.zeros(len(columns[0]), dtype=np.int64)
    for c, low, size in zip(columns, lows, sizes):
        key = key * size + (c.astype(np.int64) - low)
    distinct, index = np.unique(key, return_inverse=True)
    values = []
    for low, size in zip(reversed(lows), reversed(sizes)):
        values.append(distinct % size + low)
        distinct = distinct // size
    return index.ravel(), values[::-1]


def _cell_keys(step: np.ndarray, layer: np.ndarray) -> np.ndarray:
    """One int64 per (step, layer code); layer codes stay below 2^24."""
    return step.astype(np.int64) * (1 << 24) + layer


def _mean(groups: np.ndarray, values: np.ndarray, count: int) -> np.ndarray:
    """Mean of the finite ``values`` per group index (NaN for a group with none)."""
    finite = np.isfinite(values)
    total = np.bincount(groups[finite], values[finite], count)
    seen = np.bincount(groups[finite], None, count)
    return np.divide(total, seen, out=np.full(count, np.nan), where=seen > 0)


def _cell_frame(labels: tuple[np.ndarray, np.ndarray], **values: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"step": labels[0], "layer": labels[1], **values})


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
