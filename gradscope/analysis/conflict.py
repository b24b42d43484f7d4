r"""Task conflict from the K x K task Gram G_ab = <g_a, g_b> (TASKS) and the per-sample
cross-loss dots (TASK_SAMPLES); group conflict from the per-sample Gram (GRAM + groups).

Task cosines are batch-gradient cosines cos = G_ab / sqrt(G_aa G_bb) (PCGrad and GCond
act on the batch gradients g_a, so that is the cosine they test; no epsilon:
gradscope.analysis.cosines). Group cosines are signal cosines, with each sample's own
terms left out (``group_pair_rows``). A layer in which task a's gradient is exactly 0
holds parameters task a does not use (a task-specific head): it is excluded for every
pair with a, so the model-level Gram of a pair sums only the layers both tasks reach.
A pair with no such layer has no cosine (NaN).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from gradscope.analysis.coherence import (
    ROW_COLUMNS,
    concat_rows,
    grams,
    has_columns,
    tidy,
)
from gradscope.analysis.cosines import cosine, signal_cosine
from gradscope.analysis.thresholds import CONFLICT_COS, SEVERE_CONFLICT, STRONG_CONFLICT
from gradscope.analysis.types import NOT_RECORDED, Verdict, no_data

if TYPE_CHECKING:
    from gradscope.analysis.samples import SampleSummary

STRONG, SEVERE = STRONG_CONFLICT, SEVERE_CONFLICT  # GCond conflict zones (analysis.thresholds)
CONFLICT_TOL = 1e-9  # cos below -tol counts as conflict (round-off on orthogonal pairs)


def magnitude_similarity(norm2_a: np.ndarray, norm2_b: np.ndarray) -> np.ndarray:
    """2|a||b| / (|a|^2 + |b|^2) (PCGrad, Yu et al. 2020); 1 for equal norms, NaN if both 0.

    >>> magnitude_similarity(np.array([1.0]), np.array([4.0])).tolist()
    [0.8]
    """
    a2, b2 = np.asarray(norm2_a, dtype=float), np.asarray(norm2_b, dtype=float)
    total = a2 + b2
    return np.where(total > 0, 2 * np.sqrt(a2 * b2) / np.where(total > 0, total, 1.0), np.nan)


def _solve_on_support(gram: np.ndarray, support: tuple[int, ...]) -> np.ndarray | None:
    """Minimiser of w^T G w with sum(w) = 1 on ``support`` (KKT system), None if infeasible."""
    size = len(support)
    sub = gram[np.ix_(support, support)]
    system = np.block([[2 * sub, np.ones((size, 1))], [np.ones((1, size)), np.zeros((1, 1))]])
    rhs = np.concatenate([np.zeros(size), [1.0]])
    solution = np.linalg.lstsq(system, rhs, rcond=None)[0][:size]
    if abs(solution.sum() - 1.0) > 1e-8 or (solution < -1e-12).any():
        return None
    weights = np.zeros(gram.shape[0])
    weights[list(support)] = np.clip(solution, 0.0, None)
    return weights / weights.sum()


def mgda(gram: np.ndarray) -> tuple[float, np.ndarray]:
    r"""MGDA min-norm point: min over the simplex of |sum_k w_k g_k| = sqrt(w^T G w).

    Désidéri 2012; Sener & Koltun 2018. K = 2 closed form
    w_1 = clip((G_22 - G_12) / (G_11 + G_22 - 2 G_12), 0, 1); K > 2 exactly, by
    solving the KKT system on every support (2^K - 1 of them; K is small) and keeping the
    feasible one with the lowest value. A norm near 0 means a Pareto-stationary point:
    no common descent direction for all tasks.

    >>> value, weights = mgda(np.array([[1.0, -1.0], [-1.0, 1.0]]))
    >>> round(value, 12), weights.tolist()
    (0.0, [0.5, 0.5])
    """
    gram = np.asarray(gram, dtype=np.float64)
    size = gram.shape[0]
    if size == 2:
        denominator = gram[0, 0] + gram[1, 1] - 2 * gram[0, 1]
        identical = denominator <= 1e-12 * (gram[0, 0] + gram[1, 1])  # relative: |g_1 - g_2| ~ 0
        first = 0.5 if identical else (gram[1, 1] - gram[0, 1]) / denominator
        weights = np.array([np.clip(first, 0.0, 1.0), 1 - np.clip(first, 0.0, 1.0)])
    else:
        best, weights = np.inf, np.full(size, 1.0 / size)
        for count in range(1, size + 1):
            for support in itertools.combinations(range(size), count):
                candidate = _solve_on_support(gram, support)
                if candidate is not None and candidate @ gram @ candidate < best - 1e-15:
                    best, weights = candidate @ gram @ candidate, candidate
    return float(np.sqrt(max(weights @ gram @ weights, 0.0))), weights


def task_grams(tasks: pd.DataFrame) -> pd.DataFrame:
    """Long table of TASKS: one row per (step, layer, task_a, task_b) with a < b.

    Columns: step, layer, task_a, task_b, dot, norm2_a, norm2_b.
    """
    records = []
    for step, layer, names, values in tasks[["step", "layer", "tasks", "values"]].itertuples(index=False):
        size = len(names)
        matrix = np.asarray(values, dtype=np.float64).reshape(size, size)
        for a, b in itertools.combinations(range(size), 2):
            records.append((step, layer, names[a], names[b], matrix[a, b], matrix[a, a], matrix[b, b]))
    columns = ["step", "layer", "task_a", "task_b", "dot", "norm2_a", "norm2_b"]
    return pd.DataFrame(records, columns=columns)


def _pair_rows(pairs: pd.DataFrame) -> list[pd.DataFrame]:
    """cos and magnitude_similarity per (step, pair) for the layers and the model."""
    shared = pairs[(pairs["norm2_a"] > 0) & (pairs["norm2_b"] > 0)]
    model = shared.groupby(["step", "task_a", "task_b"], as_index=False)[["dot", "norm2_a", "norm2_b"]].sum()
    parts = []
    for frame, scope in ((model, "task_pair"), (shared, "layer")):
        frame = frame.assign(
            cos=cosine(frame["dot"], frame["norm2_a"], frame["norm2_b"]),
            magnitude_similarity=magnitude_similarity(frame["norm2_a"], frame["norm2_b"]),
            pair=frame["task_a"] + "|" + frame["task_b"],
        )
        if scope == "layer":  # per-layer conflict map: key "layer@a|b"
            frame = frame.assign(pair=frame["layer"] + "@" + frame["pair"])
        parts += [tidy(frame, n, n, scope=scope, key="pair") for n in ("cos", "magnitude_similarity")]
    return parts


def _summary_rows(cos: pd.DataFrame) -> pd.DataFrame:
    """conflict_fraction per step (model) and per pair (step -1); cos_trend per pair."""
    conflict = (cos["value"] < -CONFLICT_TOL).astype(float)
    per_step = conflict.groupby(cos["step"]).mean().rename("v").reset_index()
    per_pair = conflict.groupby(cos["key"]).mean().rename("v").reset_index().assign(step=-1)
    trends = []
    for pair, block in cos.groupby("key"):
        if block["step"].nunique() >= 3:
            slope = np.polyfit(block["step"].astype(float), block["value"], 1)[0]
            trends.append((-1, pair, slope))
    trend = pd.DataFrame(trends, columns=["step", "key", "v"])
    return concat_rows(
        [
            tidy(per_step, "conflict_fraction", "v"),
            tidy(per_pair, "conflict_fraction", "v", scope="task_pair", key="key"),
            tidy(trend, "cos_trend", "v", scope="task_pair", key="key"),
        ]
    )


def _mgda_rows(tasks: pd.DataFrame) -> pd.DataFrame:
    """mgda_norm (model) and mgda_weight (task) per step, over the shared layers.

    MGDA is defined on shared parameters, so the Gram sums only the layers in which
    every task's gradient is non-zero (rows with another task list are skipped).
    """
    records = []
    for step, block in tasks.groupby("step"):
        names = list(block["tasks"].iloc[0])
        size = len(names)
        matrices = [
            np.asarray(v, dtype=float).reshape(size, size)
            for t, v in zip(block["tasks"], block["values"], strict=True)
            if list(t) == names
        ]
        shared = [m for m in matrices if (np.diag(m) > 0).all()]
        if size < 2 or not shared:
            continue
        value, weights = mgda(np.sum(shared, axis=0))
        records.append((step, "mgda_norm", "model", "", value))
        records += [(step, "mgda_weight", "task", n, w) for n, w in zip(names, weights, strict=True)]
    return pd.DataFrame(records, columns=list(ROW_COLUMNS))


def group_gram(matrix: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gram of group gradients as a block sum of the per-sample Gram: Z^T K Z.

    With Z (B x n) the one-hot group matrix, <sum_{i in a} g_i, sum_{j in b} g_j> =
    sum_{i in a, j in b} K_ij. Returns (group labels (n,), n x n Gram).

    >>> group_gram(np.eye(3), np.array([0, 0, 1]))[1].tolist()
    [[2.0, 0.0], [0.0, 1.0]]
    """
    names, index = np.unique(labels, return_inverse=True)
    onehot = np.eye(len(names))[index]
    return names, onehot.T @ matrix @ onehot


def _group_rows(gram: pd.DataFrame, lookup: dict[tuple[int, int], np.ndarray]) -> pd.DataFrame:
    """group_cos (signal) and group_cos_batch per (step, group pair) from the model Gram
    of each micro-batch; ``lookup`` maps (step, micro) to each sample's group label.
    Cross-micro-batch dots are not in GRAM: the block sums are pooled over the step's
    micro-batches (``group_pair_rows``)."""
    records = []
    for step, micro, _layer, matrix in grams(gram, by_layer=False):
        groups = lookup.get((step, micro))
        if groups is None or len(groups) != matrix.shape[0] or (groups < 0).any():
            continue
        names, block = group_gram(matrix, groups)
        index = np.unique(groups, return_inverse=True)[1].ravel()
        own, counts = np.bincount(index, np.diag(matrix), len(names)), np.bincount(index, None, len(names))
        for a, b in itertools.combinations(range(len(names)), 2):
            records.append((step, f"{names[a]}|{names[b]}", block[a, b], block[a, a], block[b, b],
                            own[a], own[b], counts[a], counts[b]))
    return group_pair_rows(pd.DataFrame(records, columns=list(GROUP_PAIR_COLUMNS)))


GROUP_PAIR_COLUMNS = ("step", "key", "cross", "norm2_a", "norm2_b", "own_a", "own_b", "n_a", "n_b")


def group_pair_rows(pairs: pd.DataFrame) -> pd.DataFrame:
    """group_cos and group_cos_batch rows from per-(step, pair) block sums, pooled per step.

    Columns of ``pairs`` (GROUP_PAIR_COLUMNS): cross = <G_A, G_B>, norm2 = |G_A|^2, own =
    sum_{i in A} |g_i|^2, n = group size, one row per micro-batch (or one per step).
    group_cos is ``cosines.signal_cosine`` of the pooled sums (about 1 for groups with
    equal mean gradients, whatever their size); group_cos_batch the plug-in cosine of the
    group gradients (mean over micro-batches), which per-sample noise shrinks toward 0.
    """
    if not len(pairs):
        return concat_rows([])
    batch = pairs.assign(value=cosine(pairs["cross"], pairs["norm2_a"], pairs["norm2_b"]))
    batch = batch.groupby(["step", "key"], as_index=False)["value"].mean()
    pooled = pairs.assign(
        within_a=pairs["norm2_a"] - pairs["own_a"], within_b=pairs["norm2_b"] - pairs["own_b"],
        pairs_ab=pairs["n_a"] * pairs["n_b"],
        pairs_a=pairs["n_a"] * (pairs["n_a"] - 1), pairs_b=pairs["n_b"] * (pairs["n_b"] - 1),
    )
    sums = ["cross", "within_a", "within_b", "pairs_ab", "pairs_a", "pairs_b"]
    pooled = pooled.groupby(["step", "key"], as_index=False)[sums].sum()
    pooled["value"] = signal_cosine(pooled["cross"], pooled["within_a"], pooled["within_b"],
                                    (pooled["pairs_ab"], pooled["pairs_a"], pooled["pairs_b"]))
    return concat_rows([tidy(pooled, "group_cos", "value", scope="group_pair", key="key"),
                        tidy(batch, "group_cos_batch", "value", scope="group_pair", key="key")])


def sketch_group_rows(group_sketch: pd.DataFrame) -> pd.DataFrame:
    """group_cos and group_cos_batch per (step, group pair) from per-(step, layer, group)
    sketch sums (sketches.SUM_COLUMNS): the whole step's group gradients, across its
    micro-batches, summed over layers for the model (works without GRAM)."""
    records = []
    for step, block in group_sketch.groupby("step", sort=True):
        by_group = {g: b for g, b in block.groupby("part", sort=True)}
        for a, b in itertools.combinations(sorted(by_group), 2):
            joined = by_group[a].merge(by_group[b], on="layer", suffixes=("_a", "_b"))
            if not len(joined):
                continue
            sum_a, sum_b = np.stack(joined["sum_a"]), np.stack(joined["sum_b"])
            dots = (float(np.sum(sum_a * sum_b)), float(np.sum(sum_a * sum_a)), float(np.sum(sum_b * sum_b)))
            own = float(joined["own_a"].sum()), float(joined["own_b"].sum())
            counts = int(joined["count_a"].max()), int(joined["count_b"].max())
            records.append((step, f"{a}|{b}", *dots, *own, *counts))
    return group_pair_rows(pd.DataFrame(records, columns=list(GROUP_PAIR_COLUMNS)))


def _sample_rows(task_samples: pd.DataFrame, worst: int) -> pd.DataFrame:
    """sample_cos: per-step mean (model) and the ``worst`` lowest samples (scope sample).

    A sample's cosine is summed over the layers both of its loss terms reach, then the
    minimum over task pairs; the key is "<step>:-1:<sample>" (TASK_SAMPLES has no micro).
    """
    shared = task_samples[(task_samples["norm2_a"] > 0) & (task_samples["norm2_b"] > 0)]
    by = ["step", "sample", "task_a", "task_b"]
    model = shared.groupby(by, as_index=False)[["dot", "norm2_a", "norm2_b"]].sum()
    model["cos"] = cosine(model["dot"], model["norm2_a"], model["norm2_b"])
    per_sample = model.groupby(["step", "sample"], as_index=False)["cos"].min()
    means = per_sample.groupby("step", as_index=False)["cos"].mean()
    lowest = per_sample.nsmallest(worst, "cos")
    lowest = lowest.assign(key=lowest["step"].astype(str) + ":-1:" + lowest["sample"].astype(str))
    return concat_rows(
        [tidy(means, "sample_cos", "cos"), tidy(lowest, "sample_cos", "cos", scope="sample", key="key")]
    )


def conflict_metrics(
    tasks: pd.DataFrame | None,
    task_samples: pd.DataFrame | None = None,
    gram: pd.DataFrame | None = None,
    samples: SampleSummary | None = None,
    *,
    worst: int = 20,
) -> pd.DataFrame:
    """All conflict rows (step, name, scope, key, value); missing inputs give fewer rows."""
    parts = []
    if has_columns(tasks, "step", "layer", "tasks", "values"):
        pair_parts = _pair_rows(task_grams(tasks))
        model_cos = pair_parts[0] if len(pair_parts) else concat_rows([])
        parts += pair_parts + [_summary_rows(model_cos), _mgda_rows(tasks)]
    needed = ("step", "sample", "task_a", "task_b", "dot", "norm2_a", "norm2_b")
    if has_columns(task_samples, *needed):
        parts.append(_sample_rows(task_samples, worst))
    groups = samples.groups if samples is not None else {}
    if has_columns(gram, "step", "micro", "layer", "size", "values") and groups:
        parts.append(_group_rows(gram, groups))
    elif samples is not None and len(samples.group_sketch):
        parts.append(sketch_group_rows(samples.group_sketch))
    return concat_rows(parts)


def conflict_verdict(rows: pd.DataFrame) -> Verdict:
    """Median model-level cosine per task pair (or group pair) over the recorded steps.

    alert: a pair's median cos < -0.5 (GCond's strong-conflict zone; -0.8 is named
    "severe" in the summary). warn: median cos < 0 (PCGrad's conflict criterion) or the
    pair conflicts on more than half of the steps. ok otherwise.
    """
    source = "PCGrad (cos < 0); GCond zones -0.5 / -0.8"
    pairs = rows[(rows["name"].isin(["cos", "group_cos"])) & rows["scope"].isin(["task_pair", "group_pair"])]
    pairs = pairs.dropna(subset=["value"])
    if not len(pairs):
        why = "no named tasks (gradscope.tasks) or sample groups recorded"
        return no_data("conflict", NOT_RECORDED, why, source)
    medians = pairs.groupby("key")["value"].median().sort_values()
    fractions = (pairs["value"] < -CONFLICT_TOL).groupby(pairs["key"]).mean()
    pair, value = str(medians.index[0]), float(medians.iloc[0])
    conflicted = pairs[(pairs["key"] == pair) & (pairs["value"] < -CONFLICT_TOL)]
    steps = tuple(int(s) for s in conflicted["step"])
    lines = [f"{k}: median cos {v:.3g}, conflict on {fractions[k]:.0%} of steps" for k, v in medians.items()]
    details = tuple(lines[:8]) + ((f"... and {len(lines) - 8} more pairs",) if len(lines) > 8 else ())
    common = {"metric": "conflict.cos", "value": value, "source": source, "details": details}
    if value < STRONG:
        zone = "severe" if value < SEVERE else "strong"
        summary = f"{zone} conflict between {pair}: median cos {value:.2f}"
        return Verdict("conflict", "alert", summary, threshold=STRONG, steps=steps, **common)
    if value < CONFLICT_COS - CONFLICT_TOL or fractions.max() > 0.5:
        summary = f"tasks {pair} conflict: median cos {value:.2f}"
        return Verdict("conflict", "warn", summary, threshold=CONFLICT_COS, steps=steps, **common)
    return Verdict(
        "conflict", "ok", f"no task conflict: lowest median cos {value:.2f}", threshold=CONFLICT_COS, **common
    )
