"""What the optimizer did, as metrics rows: learning rate per param group, and each layer's
weight and update norms.

Inputs: STEPS (step, optimizer, hparams: a JSON list with one object per param group, as
the optimizer held it when the step ended: the learning rate the step used, since a
scheduler steps after the optimizer) and LAYERS (weight_norm, update_norm per parameter).
These rows sit in the stability family (so ``check`` and ``export`` read them) but never
decide its verdict: ``SCHEDULE_NAMES`` lists them for the engine to set aside.

Rows (step, name, scope, key, value):

- ``lr``, scope ``param_group``: key the group's index ("0", "1", ...) when the run has one
  optimizer, "<optimizer>.<group>" when it has several (optimizer indices in the order they
  first stepped, as STEPS.optimizer). Groups without a numeric lr give no row.
- ``weight_norm`` / ``update_norm``, scope ``layer``: ||W|| before the step and
  ||W_after - W_before||, combined over the layer's parameters as sqrt(sum of squares).
"""

from __future__ import annotations

import json

import pandas as pd

from gradscope.analysis.coherence import concat_rows, has_columns, layer_sums, tidy

SCHEDULE_NAMES = ("lr", "weight_norm", "update_norm")


def learning_rates(steps: pd.DataFrame) -> pd.DataFrame:
    """Columns step, key, lr: one row per (step, optimizer, param group) with a numeric lr.

    >>> steps = pd.DataFrame({"step": [0, 1], "hparams": ['[{"lr": 0.1}]', '[{"lr": 0.05}, {"lr": 1}]']})
    >>> learning_rates(steps).to_dict("list")
    {'step': [0, 1, 1], 'key': ['0', '0', '1'], 'lr': [0.1, 0.05, 1.0]}
    """
    frame = steps.sort_values("step").drop_duplicates("step")
    optimizers = frame["optimizer"] if "optimizer" in frame else pd.Series(0, index=frame.index)
    several = optimizers[optimizers >= 0].nunique() > 1
    rows: list[tuple[int, str, float]] = []
    for step, optimizer, text in zip(frame["step"], optimizers, frame["hparams"]):
        groups = _groups(text)
        for index, group in enumerate(groups):
            lr = group.get("lr") if isinstance(group, dict) else None
            if isinstance(lr, (int, float)) and not isinstance(lr, bool):
                key = f"{int(optimizer)}.{index}" if several else str(index)
                rows.append((int(step), key, float(lr)))
    return pd.DataFrame(rows, columns=["step", "key", "lr"])


def _groups(text: object) -> list:
    """The param-group list of one hparams cell; [] for a missing or malformed one."""
    if not isinstance(text, str) or not text:
        return []
    try:
        groups = json.loads(text)
    except ValueError:
        return []
    return groups if isinstance(groups, list) else []


def schedule_metrics(steps: pd.DataFrame | None, layers: pd.DataFrame | None) -> pd.DataFrame:
    """Rows lr (per param group), weight_norm and update_norm (per layer); fewer rows when
    the inputs lack the columns."""
    parts = []
    if has_columns(steps, "step", "hparams"):
        rates = learning_rates(steps)
        parts.append(tidy(rates, "lr", "lr", scope="param_group", key="key"))
    if has_columns(layers, "step", "layer"):
        per_layer = layer_sums(layers)
        for name in ("weight_norm", "update_norm"):
            if name in per_layer:
                parts.append(tidy(per_layer.dropna(subset=[name]), name, name, scope="layer", key="layer"))
    return concat_rows(parts)
