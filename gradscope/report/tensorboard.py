"""A run's metrics as TensorBoard event files, next to a user's other curves.

Scalars: every row of the metrics table with a step (step -1 holds whole-run values,
which are not curves) and a scope other than ``sample`` (one curve per sample would flood
the dashboard), tagged ``family/name`` at model scope and ``family/name/scope/key``
otherwise, e.g. ``stability/lr/param_group/0``, ``stability/update_norm/layer/fc1``.

Histograms, one per recorded step, of per-sample gradient norms over the layers with
per-sample rows (every rank's samples: the global batch):

- ``per_sample/contribution_norm``: ||c_i||, the sample's exact contribution to the gradient
  the optimizer saw (SAMPLES.norm2 summed over layers, square root);
- ``per_sample/grad_norm``: ||g_i|| = |f| ||c_i||, the gradient of the sample's own loss,
  on steps whose factor f (STEPS.per_sample_scale) is known.

Events are written with tensorboard's own event-file writer and protocol buffers (no
torch, no TensorFlow); ``tensorboard`` is imported only here, when an export runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradscope.errors import GradscopeError
from gradscope.store.reader import Run

SUFFIX = ".gradscope"  # event files of an export end with it (a re-export finds its own)
BINS = 30
MISSING = "the TensorBoard export needs the tensorboard package: pip install 'gradscope[tensorboard]'"


@dataclass(frozen=True)
class Exported:
    """What an export wrote, and what it left out."""

    path: Path  # the event file
    scalars: int  # scalar points
    histograms: int
    whole_run_rows: int  # metrics rows with step -1 (not curves)
    sample_rows: int  # metrics rows at sample scope


def scalar_tag(family: str, name: str, scope: str, key: str) -> str:
    """``family/name`` at model scope, else ``family/name/scope/key``.

    >>> scalar_tag("stability", "lr", "param_group", "0")
    'stability/lr/param_group/0'
    """
    return f"{family}/{name}" if scope == "model" else f"{family}/{name}/{scope}/{key}"


def per_sample_norms(run: Run) -> pd.DataFrame:
    """Columns step, contribution_norm, grad_norm: one row per recorded sample (all ranks,
    every backward call of the step), norms over the layers that have per-sample rows."""
    keys = ["step", "rank", "micro", "sample"]
    partial = []
    for batch in run.record_batches("samples", [*keys, "norm2"]):
        frame = batch.to_pandas()
        partial.append(frame.groupby(keys, as_index=False)["norm2"].sum())
    if not partial:
        return pd.DataFrame({"step": [], "contribution_norm": [], "grad_norm": []})
    norms = pd.concat(partial).groupby(keys, as_index=False)["norm2"].sum()
    scales = run.table("steps", ["step", "rank", "per_sample_scale"]).drop_duplicates(["step", "rank"])
    norms = norms.merge(scales, on=["step", "rank"], how="left")
    norms["contribution_norm"] = np.sqrt(norms["norm2"].astype(float))
    norms["grad_norm"] = norms["contribution_norm"] * norms["per_sample_scale"].astype(float).abs()
    return norms[["step", "contribution_norm", "grad_norm"]]


def _start_time(meta: dict[str, Any]) -> float:
    """meta.json's start as a Unix time; now when absent or unreadable."""
    try:
        return datetime.strptime(str(meta.get("started")), "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return time.time()


def _clocks(run: Run) -> dict[int, float]:
    """step -> Unix time at the step's end (the lowest rank's), for the events' wall time."""
    steps = run.table("steps", ["step", "rank", "wall_time"])
    steps = steps[steps["rank"] == steps["rank"].min()] if len(steps) else steps
    start = _start_time(run.meta)
    return {int(step): start + (wall if math.isfinite(wall) else 0.0)
            for step, wall in zip(steps["step"], steps["wall_time"])}


def _scalar_points(metrics: pd.DataFrame) -> Iterator[tuple[str, int, float]]:
    curves = metrics[(metrics["step"] >= 0) & (metrics["scope"] != "sample")]
    curves = curves[np.isfinite(curves["value"].astype(float))]
    for row in curves.itertuples(index=False):
        yield scalar_tag(row.family, row.name, row.scope, row.key), int(row.step), float(row.value)


def write_tensorboard(run: Run, metrics: pd.DataFrame, logdir: Path) -> Exported:
    """Write ``metrics`` (the run's metrics table) and the per-sample histograms to one new
    event file in ``logdir`` (created when missing)."""
    proto, writer_class = _tensorboard()
    logdir.mkdir(parents=True, exist_ok=True)
    writer = writer_class(str(logdir), filename_suffix=SUFFIX)
    clocks = _clocks(run)
    now = time.time()

    def event(step: int, value: Any) -> None:
        summary = proto.Summary(value=[value])
        writer.add_event(proto.Event(wall_time=clocks.get(step, now), step=step, summary=summary))

    scalars = histograms = 0
    for tag, step, value in _scalar_points(metrics):
        event(step, proto.Summary.Value(tag=tag, simple_value=value))
        scalars += 1
    norms = per_sample_norms(run)
    for step, block in norms.groupby("step"):
        for column in ("contribution_norm", "grad_norm"):
            values = block[column].to_numpy(float)
            values = values[np.isfinite(values)]
            if values.size:
                histo = histogram(proto, values)
                event(int(step), proto.Summary.Value(tag=f"per_sample/{column}", histo=histo))
                histograms += 1
    path = Path(getattr(writer, "_file_name", logdir))
    writer.close()
    return Exported(path, scalars, histograms, int((metrics["step"] < 0).sum()),
                    int(((metrics["step"] >= 0) & (metrics["scope"] == "sample")).sum()))


def histogram(proto: Any, values: np.ndarray, bins: int = BINS) -> Any:
    """A HistogramProto of ``values`` (finite, at least one): ``bins`` equal-width buckets,
    each given by its right edge, after an empty bucket at the left edge (as torch's
    SummaryWriter writes them, so TensorBoard draws the lowest value)."""
    counts, edges = np.histogram(values, bins=bins)
    return proto.HistogramProto(
        min=float(values.min()),
        max=float(values.max()),
        num=float(values.size),
        sum=float(values.sum()),
        sum_squares=float(values @ values),
        bucket_limit=[float(edges[0]), *map(float, edges[1:])],
        bucket=[0.0, *map(float, counts)],
    )


class _Protos:
    """The protocol buffer classes an export writes."""

    def __init__(self) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary

        self.Event, self.Summary, self.HistogramProto = Event, Summary, HistogramProto


def _tensorboard() -> tuple[_Protos, Any]:
    try:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        return _Protos(), EventFileWriter
    except ImportError:
        raise GradscopeError(MISSING) from None
