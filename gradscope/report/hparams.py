"""The optimizer's hyperparameters per step, from the STEPS table's ``hparams`` column
(a JSON list with one object per parameter group, as the recorder read it from
``optimizer.param_groups`` at each step).

Numbers become a tidy frame (step, series, value), one series per optimizer, group and
key ("lr", "betas[0]"...), so a learning-rate schedule, a warm-up or a burst can be drawn
like any metric; everything else (flags, None) is only listed in the summary.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pandas as pd

from gradscope.analysis.text import step_list

SERIES_COLUMNS = ("step", "series", "group", "name", "value")


def _numbers(name: str, value: object) -> Iterator[tuple[str, float]]:
    """(name, number) for a number, or per element of a list of numbers ("betas[0]")."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield name, float(value)
    elif isinstance(value, list) and len(value) <= 8:
        for index, item in enumerate(value):
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                yield f"{name}[{index}]", float(item)


def _groups(text: object) -> list[dict]:
    try:
        groups = json.loads(text) if isinstance(text, str) and text else []
    except ValueError:
        return []
    return [g for g in groups if isinstance(g, dict)] if isinstance(groups, list) else []


def _label(optimizer: int, group: int, several_optimizers: bool) -> str:
    return f"optimizer {optimizer} group {group}" if several_optimizers else f"group {group}"


def hparam_rows(steps: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(numbers, everything): numbers has SERIES_COLUMNS (series "group 0", name "lr");
    everything has step, group, name, text (every key, as JSON text) for the summary."""
    if steps.empty or "hparams" not in steps.columns:
        empty = pd.DataFrame(columns=list(SERIES_COLUMNS))
        return empty, pd.DataFrame(columns=["step", "group", "name", "text"])
    if "rank" in steps.columns:
        steps = steps[steps["rank"] == steps["rank"].min()]
    optimizers = steps["optimizer"] if "optimizer" in steps.columns else pd.Series(0, index=steps.index)
    several = optimizers.nunique() > 1
    numbers: list[tuple] = []
    texts: list[tuple] = []
    for step, optimizer, text in zip(steps["step"], optimizers, steps["hparams"]):
        for index, group in enumerate(_groups(text)):
            label = _label(int(optimizer), index, several)
            for key, value in group.items():
                texts.append((int(step), label, str(key), json.dumps(value, sort_keys=True)))
                for name, number in _numbers(str(key), value):
                    numbers.append((int(step), f"{label}: {name}", label, name, number))
    frame = pd.DataFrame(numbers, columns=list(SERIES_COLUMNS)).sort_values(["series", "step"], kind="stable")
    return frame, pd.DataFrame(texts, columns=["step", "group", "name", "text"])


def summary(everything: pd.DataFrame) -> list[tuple[str, str, str, str, int]]:
    """Per (group, key): first value, last value, the steps at which it changed (at most
    a few, as text) and how many distinct values it took, in first-seen order."""
    rows = []
    for (group, name), frame in everything.groupby(["group", "name"], sort=False):
        frame = frame.sort_values("step", kind="stable")
        texts = frame["text"].to_list()
        changed = [int(s) for s, a, b in zip(frame["step"].iloc[1:], texts[:-1], texts[1:]) if a != b]
        shown = step_list(changed) if changed else "-"
        rows.append((str(group), str(name), _short(texts[0]), _short(texts[-1]), shown,
                     len(set(texts))))
    return rows  # type: ignore[return-value]


def charted(numbers: pd.DataFrame) -> list[str]:
    """The numeric hyperparameters worth a chart: ``lr`` always (a flat line says the rate
    was constant), then those that change during the run (``momentum``, ``betas[1]``...)."""
    moving = numbers.groupby("series")["value"].nunique()
    names = {n for s, n in zip(numbers["series"], numbers["name"]) if moving.get(s, 0) > 1 or n == "lr"}
    return sorted(names, key=lambda n: (n != "lr", n))


def _short(text: str) -> str:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.6g}"
    return text if len(text) <= 40 else text[:37] + "..."
