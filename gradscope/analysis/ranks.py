r"""Multi-rank runs (DDP) combined into one run over the global batch.

Under DistributedDataParallel every rank records its own tables: the same model and the
same all-reduced gradient, different samples. Notation: W ranks, c_i the recorded
contribution of sample i to its rank's LOCAL gradient G_r = sum_{i in r} c_i (before the
all-reduce), ``layers.sum_norm2`` = |p.grad|^2 with p.grad = (1/W) sum_r G_r after it
(DDP averages: ``meta.json`` ``distributed.gradient_averaging``), ``layers.local_norm2``
= |G_r|^2. In the units of c:

.. math::
    S_1 = \|\textstyle\sum_r G_r\|^2 = W^2\,\|p.grad\|^2,\qquad
    S_2 = \textstyle\sum_r\sum_{i\in r}\|c_i\|^2,\qquad m = \sum_r m_r .

When every rank has the same per-sample factor f (g_i = f c_i: equal batch sizes under a
mean loss, any sizes under a sum), f cancels in every ratio, and the metrics equal those of
one process on the same global batch (tests/distributed). When the ranks' factors differ (an
uneven last batch without DistributedSampler's padding), DDP's mean of local means weights
samples unequally and S1 of the global batch is not observed: those steps' S1 is left out
(``uneven_steps``), as it is under a DDP communication hook (the average is then unknown).

Per-sample rows of every rank are used: a rank's micro-batch index becomes
``MICRO_STRIDE * rank + micro``, so the samples of a step stay distinct and each rank's
micro-batch Gram is one micro-batch of the step. Steps are counted once. Task Grams stay
those of the lowest rank (cross-rank task dot products are not recorded).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from gradscope.analysis.types import NO_DATA, Verdict

MICRO_STRIDE = 10_000  # micro index of rank r's micro-batch k: MICRO_STRIDE * r + k
PER_RANK_TABLES = ("samples", "gram")  # rows of every rank are used


def ranks_of(frame: pd.DataFrame | None) -> list[int]:
    """The ranks present in a table (empty without a ``rank`` column)."""
    if frame is None or "rank" not in frame.columns or not len(frame):
        return []
    return sorted(int(r) for r in frame["rank"].unique())


def lowest_rank(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    ranks = ranks_of(frame)
    return frame if len(ranks) < 2 else frame[frame["rank"] == ranks[0]]


def world_size(meta: Mapping[str, Any], ranks: list[int]) -> int:
    """W from meta.json's ``distributed`` (read from torch.distributed), else the ranks seen."""
    card = meta.get("distributed")
    if isinstance(card, Mapping) and isinstance(card.get("world_size"), int):
        return int(card["world_size"])
    return max(len(ranks), 1)


def comm_hook(meta: Mapping[str, Any]) -> bool:
    card = meta.get("distributed")
    return isinstance(card, Mapping) and bool(card.get("comm_hook"))


def with_rank_micro(frame: pd.DataFrame) -> pd.DataFrame:
    """``micro`` made distinct across ranks: MICRO_STRIDE * rank + micro."""
    if "micro" not in frame.columns or "rank" not in frame.columns:
        return frame
    micro = frame["rank"].astype(np.int64) * MICRO_STRIDE + frame["micro"].astype(np.int64)
    return frame.assign(micro=micro.astype(np.int32))


def _batch_with_rank_micro(batch: pa.RecordBatch | pa.Table) -> pa.Table:
    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    names = table.schema.names
    if "micro" not in names or "rank" not in names:
        return table
    rank = pc.cast(table.column("rank"), pa.int64())
    micro = pc.add(pc.multiply(rank, MICRO_STRIDE), pc.cast(table.column("micro"), pa.int64()))
    return table.set_column(names.index("micro"), "micro", pc.cast(micro, pa.int32()))


def merged_batches(streams: Iterable[Iterator[pa.RecordBatch]]) -> Iterator[pa.Table]:
    """Record batches of several ranks (each in step order) merged into one stream in step
    order, micro made distinct (``with_rank_micro``). Memory: about one batch per rank.

    Every rank's later rows have steps >= the last step it has buffered, so the rows up to
    the smallest such step among unfinished ranks can go (rows of that step may follow in
    a later batch: a step-ordered reader, like SampleReducer, takes them)."""
    iterators = [iter(s) for s in streams]
    buffers: list[pa.Table | None] = [None] * len(iterators)
    done = [False] * len(iterators)
    while True:
        for index, iterator in enumerate(iterators):
            while not done[index] and (buffers[index] is None or not len(buffers[index])):
                batch = next(iterator, None)
                done[index] = batch is None
                buffers[index] = None if batch is None else _batch_with_rank_micro(batch)
        live = [(b, d) for b, d in zip(buffers, done) if b is not None and len(b)]
        if not live:
            return
        lasts = [b.column("step")[len(b) - 1].as_py() for b, d in live if not d]
        horizon = min(lasts) if lasts else None
        out: list[pa.Table] = []
        for index, buffer in enumerate(buffers):
            if buffer is None or not len(buffer):
                continue
            if horizon is None:
                out.append(buffer)
                buffers[index] = None
                continue
            mask = pc.less_equal(buffer.column("step"), horizon)
            out.append(buffer.filter(mask))
            buffers[index] = buffer.filter(pc.invert(mask))
        merged = pa.concat_tables([t for t in out if len(t)], promote_options="default")
        yield merged.take(pc.sort_indices(merged, sort_keys=[("step", "ascending")]))


def combine_steps(steps: pd.DataFrame) -> pd.DataFrame:
    """One row per step: ``batch_size`` the global batch (sum over ranks; -1 when a rank's is
    unknown), ``loss`` the ranks' losses averaged with their batch sizes as weights (the loss
    over the global batch for a mean-reduced loss; a plain mean when a size is unknown),
    ``skipped`` any, ``recorded`` all; the other columns (the all-reduced grad_norm, the
    learning rates) from the lowest rank."""
    ranks = ranks_of(steps)
    if len(ranks) < 2:
        return steps
    by_step = steps.groupby("step", sort=True)
    out = steps[steps["rank"] == ranks[0]].set_index("step").reindex(sorted(steps["step"].unique()))
    if "batch_size" in steps.columns:
        sizes = steps["batch_size"].astype(float)
        known = by_step["batch_size"].transform("min") > 0
        weight = np.where(known, sizes, 1.0)
        if "loss" in steps.columns:
            weighted = steps.assign(_w=weight, _wl=weight * steps["loss"].astype(float))
            sums = weighted.groupby("step")[["_w", "_wl"]].sum()
            out["loss"] = sums["_wl"] / sums["_w"]
        total = by_step["batch_size"].sum()
        out["batch_size"] = total.where(by_step["batch_size"].min() > 0, -1).astype(np.int64)
    for column, how in (("skipped", "any"), ("recorded", "all")):
        if column in steps.columns:
            out[column] = by_step[column].agg(how)
    out["rank"] = ranks[0]
    return out.reset_index()


def uneven_steps(steps: pd.DataFrame | None) -> set[int]:
    """Steps whose ranks' per-sample factors f differ (or, f unknown, their batch sizes):
    DDP's mean of local gradients then weighs samples unequally (module docstring); and
    steps that some rank did not record (DDP ``Join``: the divisor is not known)."""
    if steps is None or len(ranks_of(steps)) < 2 or "step" not in steps.columns:
        return set()
    uneven: set[int] = set()
    every = len(ranks_of(steps))
    for step, block in steps.groupby("step"):
        if block["rank"].nunique() < every:  # a rank took no part (DDP Join): the average is unknown
            uneven.add(int(step))
            continue
        scales = block["per_sample_scale"].astype(float) if "per_sample_scale" in block else None
        if scales is not None and scales.notna().all():
            differ = not np.allclose(scales, scales.iloc[0], rtol=1e-12, atol=0.0)
        else:
            differ = "batch_size" in block and block["batch_size"].nunique() > 1
        if differ:
            uneven.add(int(step))
    return uneven


def combine_layers(layers: pd.DataFrame, world: int, unknown: set[int], all_unknown: bool) -> pd.DataFrame:
    """The lowest rank's LAYERS rows with ``sum_norm2`` = S1 of the global batch in the
    units of the ranks' contributions, W^2 |p.grad|^2 (NaN on ``unknown`` steps, or on every
    step with ``all_unknown``)."""
    out = lowest_rank(layers).copy()
    if "sum_norm2" in out.columns:
        s1 = out["sum_norm2"].astype(float) * world**2
        hidden = np.full(len(out), all_unknown) | out["step"].isin(unknown).to_numpy()
        out["sum_norm2"] = s1.where(~hidden)
    return out


# PROBES keys that are maxima over a rank's batch: their maximum over ranks is the global batch's
MAX_PROBE_KEYS = r"^(max_logit|max_abs|weight_bound)(\.h\d+)?$"


def combine_probes(probes: pd.DataFrame) -> pd.DataFrame:
    """PROBES of the global batch where that is exact: maxima (attention and output logits,
    |activation|) are the maximum over ranks; every other probe (means, fractions, curvature)
    is the lowest rank's own batch (docs/distributed.md)."""
    lowest = lowest_rank(probes)
    maxima = probes[probes["key"].astype(str).str.match(MAX_PROBE_KEYS)]
    if maxima.empty:
        return lowest
    keys = ["step", "layer", "probe", "key"]
    global_max = maxima.groupby(keys, as_index=False)["value"].max()
    rest = lowest[~lowest["key"].astype(str).str.match(MAX_PROBE_KEYS)]
    return pd.concat([rest, global_max.assign(rank=lowest["rank"].min())], ignore_index=True)


def combine(tables: Mapping[str, pd.DataFrame | None], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The engine's tables over the global batch (see the module docstring); a run with one
    rank comes back as it is."""
    steps = tables.get("steps")
    ranks = ranks_of(steps)
    if len(ranks) < 2:
        return {name: lowest_rank(frame) for name, frame in tables.items()}
    world = world_size(meta, ranks)
    out: dict[str, Any] = {}
    for name, frame in tables.items():
        if frame is None:
            out[name] = None
        elif name in PER_RANK_TABLES:
            out[name] = with_rank_micro(frame)
        elif name == "steps":
            out[name] = combine_steps(frame)
        elif name == "layers":
            out[name] = combine_layers(frame, world, uneven_steps(steps), comm_hook(meta))
        elif name == "probes":
            out[name] = combine_probes(frame)
        else:
            out[name] = lowest_rank(frame)
    return out


PER_SAMPLE_FAMILIES = ("coherence", "noise", "alignment")
S1_FAMILIES = ("coherence", "noise")  # those that need S1 of the global batch


def ranks_reason(verdict: Verdict, steps: pd.DataFrame | None, meta: Mapping[str, Any]) -> Verdict:
    """A no-data per-sample verdict of a multi-process run: say when distributed training
    is why (FSDP shards, a DDP communication hook, ranks with unequal batches)."""
    if verdict.level != NO_DATA or verdict.family not in PER_SAMPLE_FAMILIES:
        return verdict
    card = meta.get("distributed")
    card = card if isinstance(card, Mapping) else {}
    notes = [str(n) for n in card.get("not_covered") or []]
    uneven = uneven_steps(steps)
    all_steps = steps["step"].nunique() if steps is not None and "step" in steps else 0
    if uneven and len(uneven) == all_steps and verdict.family in S1_FAMILIES:
        notes.append("DDP ranks had different batch sizes at every step: the all-reduced mean of local "
                     "means weighs samples unequally, so S1 of the global batch is not observed")
    if not notes:
        return verdict
    return replace(verdict, summary=f"no data: {notes[0]} (docs/distributed.md)")
