"""``gradscope compare``: what differed between runs, then what it did to training.

The first run is the baseline (A); every other run (B, C, ...) is compared with it.
1. settings: meta.json (command, recording config, world size, versions) and the
   optimizer's hyperparameters from steps.hparams (per parameter group; a value that moved
   during the run is shown "first → last (min … max)"): only the settings that differ;
2. verdicts per family, with better / worse against A;
3. model-scope metrics: the last value and the mean over steps of each run, Δ = run - A;
4. per-layer detail: each layer-scope metric's mean per layer, layers that moved most first.
Terminal layout: compare_view.py; the HTML page: compare_html.py.
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gradscope.analysis.engine import Analysis
from gradscope.analysis.types import FAMILIES, LEVELS, NO_DATA
from gradscope.report.sections import ordered
from gradscope.store.reader import Run

IMPLEMENTATION_FLAGS = {"foreach", "capturable", "differentiable", "fused"}  # same numbers either way
LAYER_METRICS = (("coherence", "m_coherence"), ("alignment", "gwa"), ("noise", "b_simple"),
                 ("stability", "update_ratio"), ("stability", "grad_norm"))


@dataclass(frozen=True)
class Compared:
    """One run in a comparison: its label (A, B, ...), the run and its analysis."""

    label: str
    run: Run
    analysis: Analysis


def labelled(runs: Sequence[Run], analyses: Sequence[Analysis]) -> list[Compared]:
    letters = string.ascii_uppercase
    return [Compared(letters[i] if i < 26 else f"R{i + 1}", r, a) for i, (r, a) in
            enumerate(zip(runs, analyses))]


def _shown(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _hparam_settings(steps: pd.DataFrame) -> dict[str, str]:
    """'lr (group 0)' -> '0.003', or 'first → last (min … max)' when it moved."""
    if steps.empty or "hparams" not in steps:
        return {}
    series: dict[str, list[object]] = {}
    for text in steps.sort_values("step")["hparams"]:
        try:
            groups = json.loads(text or "[]")
        except ValueError:
            continue
        for index, group in enumerate(groups if isinstance(groups, list) else []):
            for key, value in (group.items() if isinstance(group, dict) else ()):
                if key not in IMPLEMENTATION_FLAGS:
                    series.setdefault(f"{key} (group {index})", []).append(value)
    settings = {}
    for name, values in series.items():
        first, last = values[0], values[-1]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if all(v == first for v in values):
            settings[name] = _shown(first)
        elif len(numbers) == len(values):
            settings[name] = f"{first:.4g} → {last:.4g} ({min(numbers):.4g} … {max(numbers):.4g})"
        else:
            settings[name] = f"{_shown(first)} → {_shown(last)}"
    return settings


def run_settings(run: Run) -> dict[str, str]:
    """Every setting of a run that a comparison shows, as text."""
    meta = run.meta
    steps = run.table("steps")
    settings = {"command": " ".join(map(str, meta.get("command") or []))}
    if not steps.empty and "optimizer" in steps:
        settings["optimizer"] = ", ".join(sorted({str(o) for o in steps["optimizer"].dropna()}))
    settings.update(_hparam_settings(steps))
    config = meta.get("config")
    for key, value in (config.items() if isinstance(config, dict) else ()):
        settings[f"record {key}"] = _shown(value)
    for key in ("world_size", "torch_version", "gradscope_version", "status"):
        settings[key.replace("_", " ")] = _shown(meta.get(key, "-"))
    settings["steps recorded"] = str(len(steps))
    return settings


def settings_diff(runs: Sequence[Run]) -> tuple[pd.DataFrame, int]:
    """(settings that differ: index setting, one column per run; "-" where a run lacks
    it), and how many settings are the same in every run."""
    table = pd.DataFrame({i: run_settings(run) for i, run in enumerate(runs)}).fillna("-")
    same = table.nunique(axis=1) == 1
    return table[~same], int(same.sum())


def verdict_change(level_a: str, level: str) -> str:
    """better | worse | same, or "not comparable" when a side has no data or failed."""
    if level_a in LEVELS and level in LEVELS:
        step = LEVELS.index(level) - LEVELS.index(level_a)
        return "worse" if step > 0 else "better" if step < 0 else "same"
    return "same" if level_a == level else "not comparable"


def verdict_levels(analyses: Sequence[Analysis]) -> list[tuple[str, list[str]]]:
    """(family, [level per run]) in FAMILIES order."""
    levels = [{v.family: v.level for v in a.verdicts} for a in analyses]
    return [(family, [by.get(family, NO_DATA) for by in levels]) for family in FAMILIES]


def summarise(metrics: pd.DataFrame, scope: str = "model") -> pd.DataFrame:
    """last and mean per (family, name, key) over one scope's rows, in step order."""
    rows = metrics[metrics["scope"] == scope].sort_values("step")
    grouped = rows.groupby(["family", "name", "key"], sort=False)["value"]
    return pd.DataFrame({"last": grouped.last(), "mean": grouped.mean()})


def metric_table(analyses: Sequence[Analysis], scope: str = "model") -> pd.DataFrame:
    """Index (family, name, key); columns (statistic, run index) for statistic in last,
    mean, delta_last, delta_mean (delta: run - run 0). Rows in report order."""
    parts = {i: summarise(a.metrics, scope) for i, a in enumerate(analyses)}
    both = pd.concat(parts, axis=1).swaplevel(axis=1)
    for stat in ("last", "mean"):
        for i in parts:
            both[(f"delta_{stat}", i)] = both[(stat, i)] - both[(stat, 0)]
    rank = {f: i for i, f in enumerate(FAMILIES)}
    names = {f: ordered(f, both.index.get_level_values("name")[both.index.get_level_values("family") == f])
             for f in FAMILIES}
    keys = [(rank.get(f, 99), names.get(f, []).index(n) if n in names.get(f, []) else 99, str(k))
            for f, n, k in both.index]
    return both.iloc[sorted(range(len(both)), key=keys.__getitem__)]


def layer_detail(analyses: Sequence[Analysis], family: str, name: str, limit: int) -> pd.DataFrame:
    """Mean per layer of one layer-scope metric: columns run index, then delta_i; the
    layers whose mean moved most (relative to A's) first, at most ``limit``."""
    means = {}
    for i, analysis in enumerate(analyses):
        m = analysis.metrics
        rows = m[(m["family"] == family) & (m["name"] == name) & (m["scope"] == "layer")]
        means[i] = rows.groupby("key")["value"].mean()
    table = pd.DataFrame(means)
    if table.empty or len(analyses) < 2:
        return table
    deltas = table.sub(table[0], axis=0)
    scale = table[0].abs().where(table[0].abs() > 0, 1.0)
    moved = (deltas.abs().div(scale, axis=0)).max(axis=1, skipna=True).fillna(-np.inf)
    table = table.join(deltas.drop(columns=[0]).add_prefix("delta_"))
    return table.loc[moved.sort_values(ascending=False, kind="stable").index[:limit]]
