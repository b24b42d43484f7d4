"""Gradient coherence: how much the per-sample gradients of a step agree.

Also holds the small table reductions the other analysis modules share (tidy rows,
per-layer sums of LAYERS, the S1/S2 moments, Gram matrices per step), so that every
module reads the run tables the same way.

Notation: B samples in a backward call (micro-batch), m samples in a step (all
micro-batches), g_i the gradient of sample i's own loss (per-sample-loss convention),
S1 = ||sum_i g_i||^2, S2 = sum_i ||g_i||^2, K the B x B Gram K_ij = <g_i, g_j>. Runs store
c_i = g_i / f (format v2; f c_i in v1) with f common to the step: every metric here is a
ratio in which f cancels (docs/per-sample-engine.md, "Units").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from gradscope.analysis.cosines import cosine
from gradscope.analysis.text import step_list
from gradscope.analysis.thresholds import M_COHERENCE_MIN
from gradscope.analysis.types import NOT_RECORDED, Verdict, no_data

if TYPE_CHECKING:
    from gradscope.analysis.samples import SampleSummary

EPS = 1e-12  # stability's floors (update ratio, spike scale); cosines have none (analysis.cosines)
ROW_COLUMNS = ("step", "name", "scope", "key", "value")
_L2_COLUMNS = ("grad_norm", "weight_norm", "update_norm", "init_distance")


# ----------------------------------------------------------------------------- shared helpers
def has_columns(frame: pd.DataFrame | None, *columns: str) -> bool:
    """True when ``frame`` is a non-empty DataFrame holding every one of ``columns``."""
    return frame is not None and len(frame) > 0 and all(c in frame.columns for c in columns)


def tidy(
    frame: pd.DataFrame, name: str, value: str, *, scope: str = "model", key: str | None = None
) -> pd.DataFrame:
    """Rows (step, name, scope, key, value) from ``frame[step, value(, key)]``."""
    keys = frame[key].astype(str).to_numpy() if key else np.full(len(frame), "", dtype=object)
    return pd.DataFrame(
        {
            "step": frame["step"].to_numpy(dtype=np.int64),
            "name": np.full(len(frame), name, dtype=object),
            "scope": np.full(len(frame), scope, dtype=object),
            "key": keys.astype(object),
            "value": frame[value].to_numpy(dtype=np.float64),
        }
    )


def concat_rows(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate tidy row frames; an empty frame with ROW_COLUMNS when there are none."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in ROW_COLUMNS}).astype(
            {"step": np.int64, "value": np.float64}
        )
    return pd.concat(parts, ignore_index=True)


def _sum_or_nan(frame: pd.DataFrame, by: list[str], column: str) -> pd.Series:
    """Group sum that is NaN when any member is NaN (unknown stays unknown)."""
    grouped = frame.groupby(by, sort=True)[column]
    total = grouped.sum()
    return total.where(~frame[column].isna().groupby([frame[b] for b in by]).any())


def layer_sums(layers: pd.DataFrame) -> pd.DataFrame:
    """Reduce LAYERS' per-parameter rows to one row per (step, layer).

    Norms combine as sqrt(sum of squares) over the layer's parameters; ``nonfinite`` is
    any(); ``s1`` is the sum of ``sum_norm2`` (NaN when any row is NaN or the column is
    missing).
    """
    frame = layers.copy()
    by = ["step", "layer"]
    out = frame[by].drop_duplicates().sort_values(by).set_index(by)
    for column in _L2_COLUMNS:
        if column in frame.columns:
            squares = frame.assign(_sq=frame[column].astype(float) ** 2)
            out[column] = np.sqrt(_sum_or_nan(squares, by, "_sq"))
    if "nonfinite" in frame.columns:
        out["nonfinite"] = frame.groupby(by)["nonfinite"].any()
    out["s1"] = _sum_or_nan(frame, by, "sum_norm2") if "sum_norm2" in frame else np.nan
    return out.reset_index()


def masked_steps(layers: pd.DataFrame | None, samples: SampleSummary | None) -> pd.DataFrame:
    """Steps left out of the S1/S2 moments for non-finite inputs: a sample row with an
    inf/NaN norm2, weight_dot or sketch (``SampleSummary.nonfinite``) or a layer whose
    sum_norm2 is inf. Rows (step, name "masked_nonfinite", value 1) for the families
    that read the moments, so the metrics table says which steps have no value and why."""
    steps: set[int] = set()
    if samples is not None and len(samples.nonfinite):
        steps |= {int(s) for s in samples.nonfinite["step"]}
    if has_columns(layers, "step", "sum_norm2"):
        s1 = layers["sum_norm2"].astype(float)
        steps |= {int(s) for s in layers.loc[np.isinf(s1), "step"]}
    frame = pd.DataFrame({"step": sorted(steps), "value": 1.0})
    return tidy(frame, "masked_nonfinite", "value")


def _gram_moments(gram: pd.DataFrame) -> pd.DataFrame:
    """S1 = sum(K), S2 = trace(K), m = B from the first micro-batch of each step."""
    first = gram[gram["micro"] == gram.groupby("step")["micro"].transform("min")]
    rows = []
    for step, layer, size, values in first[["step", "layer", "size", "values"]].itertuples(index=False):
        matrix = np.asarray(values, dtype=np.float64).reshape(size, size)
        rows.append((step, layer, matrix.sum(), np.trace(matrix), size))
    return pd.DataFrame(rows, columns=["step", "layer", "s1", "s2", "m"])


def step_moments(
    layers: pd.DataFrame | None, samples: SampleSummary | None, gram: pd.DataFrame | None = None
) -> pd.DataFrame:
    """S1, S2 and m per (step, layer), plus model rows with layer "" (sums over layers).

    S1 comes from LAYERS.sum_norm2 (all micro-batches of the step). When that column is
    missing or all NaN, S1 = sum(K) and S2 = trace(K) from the step's first micro-batch
    Gram, with m = B of that micro-batch (an unbiased subsample of the step). Model rows
    sum only layers that have both S1 and S2. A step in which any layer's S1 or S2 is inf
    or NaN (an overflowed gradient) is left out whole (``masked_steps`` names it).
    Columns: step, layer, s1, s2, m, source.
    """
    per_layer = pd.DataFrame(columns=["step", "layer", "s1", "s2", "m"])
    source = ""
    if has_columns(layers, "step", "layer") and samples is not None and len(samples.s2):
        s1 = layer_sums(layers)[["step", "layer", "s1"]]
        if s1["s1"].notna().any():
            per_layer = s1.merge(samples.s2, on=["step", "layer"]).merge(samples.counts, on="step")
            per_layer, source = per_layer.dropna(subset=["s1", "s2"]), "sum_norm2"
    if not len(per_layer) and has_columns(gram, "step", "micro", "layer", "size", "values"):
        per_layer, source = _gram_moments(gram), "gram"
    finite = np.isfinite(per_layer["s1"].astype(float)) & np.isfinite(per_layer["s2"].astype(float))
    per_layer = per_layer[~per_layer["step"].isin(per_layer.loc[~finite, "step"])]  # whole steps
    if not len(per_layer):
        return pd.DataFrame(columns=["step", "layer", "s1", "s2", "m", "source"])
    model = per_layer.groupby("step").agg(s1=("s1", "sum"), s2=("s2", "sum"), m=("m", "first"))
    model = model.reset_index().assign(layer="")
    out = pd.concat([per_layer, model], ignore_index=True)
    return out.assign(source=source).sort_values(["step", "layer"], ignore_index=True)


def grams(gram: pd.DataFrame, *, by_layer: bool) -> Iterator[tuple[int, int, str, np.ndarray]]:
    """Yield (step, micro, layer, K) per Gram row; with ``by_layer=False`` the model Gram
    (sum of the per-layer Grams of one (step, micro)) with layer "". A (step, micro) whose
    Gram holds an inf or NaN (an overflowed gradient) is skipped whole, as ``step_moments``
    skips the step.
    """
    if not has_columns(gram, "step", "micro", "layer", "size", "values"):
        return
    for (step, micro), block in gram.groupby(["step", "micro"], sort=True):
        matrices = [
            np.asarray(v, dtype=np.float64).reshape(s, s)
            for s, v in zip(block["size"], block["values"], strict=True)
        ]
        if not all(np.isfinite(m).all() for m in matrices):
            continue
        if by_layer:
            for layer, matrix in zip(block["layer"], matrices, strict=True):
                yield int(step), int(micro), str(layer), matrix
        elif len({m.shape for m in matrices}) == 1:
            yield int(step), int(micro), "", np.sum(matrices, axis=0)


def scope_of(layer: str) -> str:
    """ "model" for the model-level key "", else "layer"."""
    return "model" if layer == "" else "layer"


# ----------------------------------------------------------------------------- coherence math
def coherence_from_moments(s1: np.ndarray, s2: np.ndarray, m: np.ndarray) -> dict[str, np.ndarray]:
    r"""alpha, unbiased alpha, m-coherence and gradient diversity from S1, S2, m.

    .. math::
        \alpha = \frac{\|\bar g\|^2}{\tfrac1m\sum_i\|g_i\|^2} = \frac{S_1}{m S_2},\qquad
        m\text{-coherence} = m\alpha = \frac{S_1}{S_2},\qquad
        \text{diversity} = \frac{S_2}{S_1}

    ``alpha`` is the plug-in (sample) estimator of Chatterjee & Zielinski, "On the
    Generalization Mystery in Deep Learning" (2022): it includes the i = j terms, so
    identical per-sample gradients give m-coherence m and mutually orthogonal ones 1.
    ``alpha_unbiased`` = (S1 - S2) / ((m - 1) S2) drops the diagonal: it estimates the
    population ratio |E g|^2 / E|g|^2 without bias in the numerator (can be negative);
    alpha = 1/m + (m - 1)/m * alpha_unbiased. Diversity is Yin et al. (2018), "Gradient
    Diversity", = 1 / m-coherence. Shapes: all inputs (N,) over steps.
    Zero norms: S2 = 0 gives NaN alpha/m-coherence, S1 = 0 gives NaN diversity.

    >>> out = coherence_from_moments(np.array([16.0]), np.array([4.0]), np.array([4]))
    >>> float(out["m_coherence"][0]), float(out["alpha"][0]), float(out["gradient_diversity"][0])
    (4.0, 1.0, 0.25)
    """
    s1, s2, m = (np.asarray(x, dtype=np.float64) for x in (s1, s2, m))
    good2 = s2 > 0
    safe2 = np.where(good2, s2, 1.0)
    safe1 = np.where(s1 > 0, s1, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "alpha": np.where(good2, s1 / (m * safe2), np.nan),
            "alpha_unbiased": np.where(good2 & (m > 1), (s1 - s2) / ((m - 1) * safe2), np.nan),
            "m_coherence": np.where(good2, s1 / safe2, np.nan),
            "gradient_diversity": np.where(s1 > 0, s2 / safe1, np.nan),
        }


def stiffness(matrix: np.ndarray, groups: np.ndarray | None = None) -> dict[str, float]:
    r"""Sign and cosine stiffness of a B x B Gram (Fort et al. 2019, "Stiffness").

    .. math::
        S_{sign} = \operatorname{mean}_{i\ne j}\operatorname{sign}(K_{ij}),\qquad
        S_{cos} = \operatorname{mean}_{i\ne j}\frac{K_{ij}}{\sqrt{K_{ii}K_{jj}}}

    without an epsilon (gradscope.analysis.cosines): a zero-gradient sample has no
    direction, so its pairs are left out of S_cos (sign 0, still counted in S_sign); NaN
    when no pair has a cosine. With ``groups`` (B,) also returns "cos|a|b" = mean cosine
    over i in group a, j in group b, i != j (the class stiffness matrix). B < 2 gives NaN.

    >>> stiffness(np.array([[1.0, -1.0], [-1.0, 1.0]]))
    {'stiffness_sign': -1.0, 'stiffness_cos': -1.0}
    """
    size = matrix.shape[0]
    if size < 2:
        return {"stiffness_sign": np.nan, "stiffness_cos": np.nan}
    diagonal = np.diag(matrix)
    cos = cosine(matrix, diagonal[:, None], diagonal[None, :])
    off = ~np.eye(size, dtype=bool)
    out = {
        "stiffness_sign": float(np.sign(matrix)[off].mean()),
        "stiffness_cos": _nanmean(cos[off]),
    }
    if groups is not None:
        for a in np.unique(groups):
            for b in np.unique(groups):
                mask = np.outer(groups == a, groups == b) & off
                if b >= a and mask.any():
                    out[f"cos|{a}|{b}"] = _nanmean(cos[mask])
    return out


def _nanmean(values: np.ndarray) -> float:
    """Mean of the finite ``values``; NaN when there are none (no warning)."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else np.nan


def micro_distance(s1: float, micro_norm2: np.ndarray) -> float:
    r"""1 - mean cosine between the step's micro-batch gradients G_u = sum_{i in u} g_i.

    From |G_u|^2 (sum of micro-batch u's Gram) and S1 = |sum_u G_u|^2:

    .. math::
        \overline{\cos} = \frac{\sum_{u\ne v}\langle G_u,G_v\rangle}{\sum_{u\ne v}|G_u||G_v|}
        = \frac{S_1-\sum_u|G_u|^2}{(\sum_u|G_u|)^2-\sum_u|G_u|^2}

    which is cos(G_1, G_2) exactly for two micro-batches (Gradient Agreement Filtering
    uses this cosine distance). NaN with fewer than 2 micro-batches or zero norms.

    >>> micro_distance(0.0, np.array([1.0, 1.0]))  # G_2 = -G_1
    2.0
    """
    norms = np.sqrt(np.clip(micro_norm2, 0.0, None))
    denominator = norms.sum() ** 2 - (norms**2).sum()
    if len(norms) < 2 or not denominator > 0 or not np.isfinite(s1):
        return np.nan
    return float(1.0 - (s1 - (norms**2).sum()) / denominator)


# ----------------------------------------------------------------------------- composition
def _moment_rows(moments: pd.DataFrame) -> list[pd.DataFrame]:
    values = coherence_from_moments(moments["s1"], moments["s2"], moments["m"])
    frame = moments.assign(**values)
    parts = []
    for layer_is_model, block in frame.groupby(frame["layer"] == ""):
        scope = "model" if layer_is_model else "layer"
        key = None if layer_is_model else "layer"
        parts += [tidy(block, name, name, scope=scope, key=key) for name in values]
    return parts


def _gram_rows(gram: pd.DataFrame, groups: dict[tuple[int, int], np.ndarray]) -> pd.DataFrame:
    """Stiffness per (step, layer) and model, averaged over the step's micro-batches."""
    records = []
    for by_layer in (False, True):
        for step, micro, layer, matrix in grams(gram, by_layer=by_layer):
            labels = groups.get((step, micro)) if layer == "" else None
            if labels is not None and len(labels) != matrix.shape[0]:
                labels = None
            for name, value in stiffness(matrix, labels).items():
                if name.startswith("cos|"):
                    _, a, b = name.split("|")
                    records.append((step, "stiffness_cos", "group_pair", f"{a}|{b}", value))
                else:
                    records.append((step, name, scope_of(layer), layer, value))
    frame = pd.DataFrame(records, columns=list(ROW_COLUMNS))
    return frame.groupby(list(ROW_COLUMNS[:4]), as_index=False, sort=False)["value"].mean()


def _micro_rows(gram: pd.DataFrame, moments: pd.DataFrame) -> pd.DataFrame:
    """coherence.micro_distance per (step, layer) and model, when S1 covers every micro."""
    if not len(moments) or moments["source"].iloc[0] != "sum_norm2":
        return concat_rows([])
    s1 = moments.set_index(["step", "layer"])["s1"]
    blocks = pd.DataFrame(
        [(s, u, layer, k.sum()) for s, u, layer, k in grams(gram, by_layer=True)],
        columns=["step", "micro", "layer", "norm2"],
    )
    model = blocks.groupby(["step", "micro"], as_index=False)["norm2"].sum().assign(layer="")
    records = [
        (
            step,
            "micro_distance",
            scope_of(layer),
            layer,
            micro_distance(s1[(step, layer)], b["norm2"].to_numpy()),
        )
        for (step, layer), b in pd.concat([blocks, model]).groupby(["step", "layer"])
        if (step, layer) in s1.index
    ]
    return pd.DataFrame(records, columns=list(ROW_COLUMNS))


def sketch_micro_rows(micro_sketch: pd.DataFrame) -> pd.DataFrame:
    """coherence.micro_distance per (step, layer) and model from per-(step, layer, micro)
    sketch sums (sketches.SUM_COLUMNS; works without GRAM): G_u's sketch is the sum of its
    samples' sketches, S1 = |sum_u G_u|^2 and |G_u|^2 are estimated by the sketches'."""
    if not has_columns(micro_sketch, "step", "layer", "part", "sum"):
        return concat_rows([])
    records = []
    for step, block in micro_sketch.groupby("step", sort=True):
        sums = {layer: np.stack(b.sort_values("part")["sum"]) for layer, b in block.groupby("layer")}
        parts = {layer: len(v) for layer, v in sums.items()}
        for layer, vectors in sums.items():
            records.append((step, "micro_distance", "layer", layer,
                            micro_distance(float(np.sum(vectors.sum(0) ** 2)), (vectors**2).sum(1))))
        if len(set(parts.values())) == 1:  # every layer saw the same micro-batches
            s1 = sum(float(np.sum(v.sum(0) ** 2)) for v in sums.values())
            norms = np.sum([(v**2).sum(1) for v in sums.values()], axis=0)
            records.append((step, "micro_distance", "model", "", micro_distance(s1, norms)))
    return pd.DataFrame(records, columns=list(ROW_COLUMNS))


def coherence_metrics(
    layers: pd.DataFrame | None, samples: SampleSummary | None, gram: pd.DataFrame | None
) -> pd.DataFrame:
    """All coherence rows (step, name, scope, key, value); missing inputs give fewer rows.
    Steps left out for non-finite per-sample values get a ``masked_nonfinite`` row."""
    moments = step_moments(layers, samples, gram)
    parts = _moment_rows(moments) if len(moments) else []
    if has_columns(gram, "step", "micro", "layer", "size", "values"):
        parts.append(_gram_rows(gram, samples.groups if samples is not None else {}))
        parts.append(_micro_rows(gram, moments))
    elif samples is not None and len(samples.micro_sketch):
        parts.append(sketch_micro_rows(samples.micro_sketch))
    if parts:
        parts.append(masked_steps(layers, samples))
    return concat_rows(parts)


def masked_detail(rows: pd.DataFrame) -> tuple[str, ...]:
    """One detail line naming the steps left out for non-finite values, if any."""
    steps = rows.loc[rows["name"] == "masked_nonfinite", "step"].tolist()
    if not steps:
        return ()
    return (f"{step_list(steps)} left out: a per-sample gradient was inf/NaN (see stability.nonfinite)",)


def coherence_verdict(rows: pd.DataFrame, *, threshold: float = M_COHERENCE_MIN) -> Verdict:
    """Warn when the median model m-coherence over the later half of the steps is < 1.1.

    m-coherence 1 means the per-sample gradients are mutually orthogonal on average: no
    sample's step helps another (Chatterjee & Zielinski 2022), the regime where a network
    fits examples one by one (memorisation); below 1 they cancel. The 10% margin absorbs
    sampling noise of S1/S2 (gradscope.analysis.thresholds.M_COHERENCE_MIN).
    """
    source = "Chatterjee & Zielinski 2022 (m-coherence vs 1)"
    values = rows[(rows["name"] == "m_coherence") & (rows["scope"] == "model")].dropna(subset=["value"])
    if not len(values):
        return no_data("coherence", NOT_RECORDED, "per-sample gradient norms (S1/S2) not recorded", source)
    values = values.sort_values("step")
    later = values.iloc[len(values) // 2 :]
    median = float(later["value"].median())
    level = "warn" if median < threshold else "ok"
    low = tuple(int(s) for s in later.loc[later["value"] < threshold, "step"])
    summary = (
        f"per-sample gradients near-orthogonal: median m-coherence {median:.3g} < {threshold:g}"
        if level == "warn"
        else f"per-sample gradients coherent: median m-coherence {median:.3g}"
    )
    details = (f"below {threshold:g} at {step_list(low)}",) if level == "warn" else ()
    return Verdict(
        "coherence",
        level,
        summary,
        metric="coherence.m_coherence",
        value=median,
        threshold=threshold,
        steps=low if level == "warn" else (),
        source=source,
        details=details + masked_detail(rows),
    )
