"""The conformance assertions (issue 10): a recorded run against the script's own reference.

Each check returns a list of problems, one line each, saying what differs (values, counts,
layer); an empty list is a pass. Tables are read with pandas straight from the run
directory (docs/run-format.md: any Parquet reader can), not through gradscope's reader.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tests.e2e.harness import Result

Normalise = Callable[[str], str]


def same_name(name: str) -> str:
    return name


def strip_compiled(name: str) -> str:
    """torch.compile(model) wraps the model in ``_orig_mod``: the user's name is the rest."""
    return name.removeprefix("_orig_mod.").removeprefix("_orig_mod")


@dataclass
class Spawned:
    """One idiom run plain (with GS_REFERENCE) and under ``gradscope record`` (without)."""

    name: str
    plain: Result
    recorded: Result
    run_dir: Path
    normalise: Normalise = same_name

    @property
    def reference(self) -> dict:
        assert self.plain.returncode == 0, f"{self.name}: the plain run failed:\n{self.plain.stderr[-2000:]}"
        assert self.plain.reference, f"{self.name}: the plain run wrote no reference"
        return self.plain.reference

    @property
    def meta(self) -> dict:
        path = self.run_dir / "meta.json"
        assert path.exists(), (
            f"{self.name}: no meta.json in the run directory\n{self.recorded.stderr[-2000:]}"
        )
        return json.loads(path.read_text())

    def table(self, name: str) -> pd.DataFrame:
        files = sorted((self.run_dir / name / "rank-0").glob("*.parquet"))
        frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()
        if "layer" in frame:
            frame["layer"] = frame["layer"].map(self.normalise)
        return frame

    def layers(self) -> dict[str, dict]:
        return {self.normalise(entry["name"]): entry for entry in self.meta.get("layers", [])}

    @property
    def facts(self) -> dict:
        return self.reference.get("facts", {})

    def micros(self) -> list[tuple[int, int, dict]]:
        """(step, micro, contribution) for every counted backward with a reference."""
        return [
            (s, m, micro)
            for s, step in enumerate(self.reference["steps"])
            for m, micro in enumerate(step["micro"])
            if micro
        ]


def declined(run: Spawned) -> bool:
    """An idiom the recorder may decline (facts may_decline): no steps, and it said so."""
    said = run.meta.get("failures") or (run.meta.get("recording") or {}).get("state") == "no-backward"
    return bool(run.facts.get("may_decline") and run.table("steps").empty and said)


def check_output(run: Spawned) -> list[str]:
    problems = []
    if run.recorded.returncode != run.plain.returncode:
        problems.append(
            f"exit code: plain {run.plain.returncode}, recorded {run.recorded.returncode}\n"
            f"{run.recorded.stderr[-1500:]}"
        )
    if run.recorded.stdout != run.plain.stdout:
        diff = difflib.unified_diff(
            run.plain.stdout.splitlines(), run.recorded.stdout.splitlines(), "plain", "recorded", lineterm=""
        )
        problems.append("training stdout differs:\n" + "\n".join(list(diff)[:20]))
    return problems


def check_reference(run: Spawned) -> list[str]:
    """The reference is sound: the copy reproduces the training loss, and (separable losses)
    the samples' contributions add up to the copy's batch gradient."""
    problems = []
    for s, m, micro in run.micros():
        if not math.isclose(micro["copy_loss"], micro["loss"], rel_tol=run.facts.get("rtol", 1e-9)):
            problems.append(
                f"step {s} micro {m}: reference copy loss {micro['copy_loss']!r} != {micro['loss']!r}"
            )
        if micro["residual"] is not None and micro["residual"] > run.facts.get("rtol", 1e-10):
            problems.append(
                f"step {s} micro {m}: sum of c_j misses the batch gradient by {micro['residual']:.2e}"
            )
    return problems


def check_steps(run: Spawned) -> list[str]:
    steps, want = run.table("steps"), run.reference["steps"]
    if declined(run):
        return []
    if len(steps) != len(want):
        return [f"recorded {len(steps)} steps, the script took {len(want)}"]
    problems = []
    got = steps.sort_values("step")["backward_calls"].tolist() if "backward_calls" in steps else []
    for s, (count, step) in enumerate(zip(got, want)):
        if count != step["backwards"]:
            problems.append(f"step {s}: backward_calls recorded {count}, true {step['backwards']}")
    return problems


def check_loss(run: Spawned, rtol: float = 1e-9) -> list[str]:
    steps = run.table("steps")
    if declined(run):
        return []
    if steps.empty:
        return ["no steps recorded"]
    problems = []
    recorded = steps.sort_values("step")["loss"].tolist()
    for s, (got, step) in enumerate(zip(recorded, run.reference["steps"])):
        true = step["loss"]
        if true is None or math.isnan(true):
            continue
        if not math.isclose(got, true, rel_tol=rtol, abs_tol=1e-12):
            ratio = got / true if true else float("nan")
            problems.append(f"step {s}: loss recorded {got!r}, true {true!r} (ratio {ratio:.6g})")
    return problems


def check_scale(run: Spawned) -> list[str]:
    """per_sample_scale f (g_i = f c_i) where the idiom makes it unambiguous, and its source."""
    steps, want = run.table("steps"), run.facts.get("per_sample_scale")
    if declined(run):
        return []
    problems = []
    if "per_sample_scale_source" not in steps:
        return ["steps table has no per_sample_scale_source column (run format v2)"]
    # a step without per-sample rows has no factor: NaN with source "" is the honest value
    with_rows = set(run.table("samples")["step"]) if len(run.table("samples")) else set()
    sources = set(steps.loc[steps["step"].isin(with_rows), "per_sample_scale_source"])
    if not sources <= {"declared", "read", "assumed"}:
        problems.append(f"per_sample_scale_source values {sorted(sources)} on steps with rows")
    if want is None or "per_sample_scale" not in steps:
        return problems
    recorded = dict(zip(steps["step"], steps["per_sample_scale"]))
    for s, step in enumerate(run.reference["steps"]):
        got = recorded.get(s, float("nan"))
        if s in with_rows and step["backwards"] and not math.isclose(got, want, rel_tol=1e-9):
            problems.append(f"step {s}: per_sample_scale recorded {got!r}, true {want!r}")
    return problems


def _compare(label: str, got: np.ndarray, want: np.ndarray, scale: float, rtol: float) -> str | None:
    """Within rtol of the value or of ``scale`` (the layer's largest, or ||c|| ||W|| for dots)."""
    if np.all(np.abs(got - want) <= rtol * (scale + np.abs(want))):
        return None
    usable = np.abs(want) > 0
    ratio = np.median(got[usable] / want[usable]) if usable.any() else float("nan")
    return (
        f"{label}: max |recorded - true| / scale = {np.abs(got - want).max() / scale:.3g} > {rtol:g} "
        f"(recorded/true median ratio {ratio:.6g}; recorded {got[:3].round(10).tolist()}..., "
        f"true {want[:3].round(10).tolist()}...)"
    )


def _rows_problem(run: Spawned, where: str, rows: pd.DataFrame, want: dict, batch: int) -> list[str]:
    samples = sorted(rows["sample"].tolist())
    if samples != list(range(batch)):
        return [
            f"{where}: samples {samples[:20]} recorded, the loss's batch has {batch} (per-instance rows?)"
        ]
    rows = rows.sort_values("sample")
    rtol = run.facts.get("rtol", 1e-5)
    norm2, dot = np.asarray(want["norm2"]), np.asarray(want["weight_dot"])
    dot_scale = np.sqrt(norm2.max()) * want["weight_norm"]
    found = [
        _compare(f"{where} norm2", rows["norm2"].to_numpy(), norm2, norm2.max() + 1e-300, rtol),
        _compare(f"{where} weight_dot", rows["weight_dot"].to_numpy(), dot, dot_scale + 1e-300, rtol),
    ]
    return [p for p in found if p]


def _missing_problem(run: Spawned, where: str, layer: str, want: dict) -> str | None:
    if not any(want["norm2"]):  # the layer is not in this backward's graph: c_j = 0
        return None
    entry = run.layers().get(layer)
    if entry is None:
        return f"{where}: no rows, and meta.json has no layer entry for it"
    if entry.get("covered") and not entry.get("reasons"):
        return f"{where}: no rows, yet meta.json says covered with no reason"
    return None


def check_per_sample(run: Spawned) -> list[str]:
    samples, layers = run.table("samples"), run.layers()
    if declined(run):
        return []
    problems = layer_table_problems(run, samples)
    counted = set()
    for s, m, micro in run.micros():
        counted.add((s, m))
        here = samples[(samples["step"] == s) & (samples["micro"] == m)] if len(samples) else samples
        for layer, want in micro["layers"].items():
            where = f"step {s} micro {m} layer {layer!r}"
            rows = here[here["layer"] == layer] if len(here) else here
            if len(rows):
                problems += _rows_problem(run, where, rows, want, micro["batch"])
            elif problem := _missing_problem(run, where, layer, want):
                problems.append(problem)
    if len(samples):
        steps = run.reference["steps"]
        for s, m in sorted(set(zip(samples["step"], samples["micro"])) - counted):
            if s >= len(steps) or m >= len(steps[s]["micro"]):
                problems.append(f"rows for step {s} micro {m}, a backward the script never counted")
        for layer in sorted(set(samples["layer"])):
            if layer in layers and not layers[layer].get("covered", True):
                problems.append(f"layer {layer!r} is listed not covered but has rows")
    return problems


def layer_table_problems(run: Spawned, samples: pd.DataFrame) -> list[str]:
    """meta.json layers: the user's layer names, a reason when not covered, not covered
    when no rows were recorded."""
    names = {n for _, _, micro in run.micros() for n in micro["all_layers"]}
    layers, problems = run.layers(), []
    if set(layers) != names:
        problems.append(f"meta.json layers {sorted(layers)}, the model's layers {sorted(names)}")
    with_rows = set(samples["layer"]) if len(samples) else set()
    if extra := with_rows - names:
        problems.append(f"rows for layers the model does not have: {sorted(extra)}")
    for name, entry in layers.items():
        if not entry.get("covered") and not entry.get("reason"):
            problems.append(f"layer {name!r} not covered without a reason")
        if entry.get("covered") and name not in with_rows:
            problems.append(f"layer {name!r} covered in meta.json but no rows were recorded")
    return problems


def report(problems: list[str], run: Spawned) -> str:
    return f"{run.name}: {len(problems)} problem(s)\n" + "\n".join(problems[:25])
