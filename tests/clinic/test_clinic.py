"""The clinic: tiny training scripts with a planted pathology and a healthy twin.

Each case is recorded with ``gradscope record`` in a subprocess, as a user would run it,
once per module (all cases side by side, one process per CPU). A pathology must get a
warn or alert from the family that names it; a healthy twin must get neither in any
family. docs/clinic.md holds the table of cases and the evidence; run this file as a
script (``python -m tests.clinic.test_clinic``) to print that table afresh.
"""

from __future__ import annotations

import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from gradscope.analysis.engine import Analysis
from gradscope.analysis.run import analyze_run
from gradscope.analysis.types import Verdict
from gradscope.store.reader import open_run
from tests.e2e.harness import gradscope

CASES_DIR = Path(__file__).resolve().parent / "cases"
TABLES = ("steps", "layers", "samples", "gram", "tasks", "task_samples", "probes")


@dataclass(frozen=True)
class Case:
    name: str  # the script tests/clinic/cases/<name>.py; --healthy gives the twin
    family: str  # the verdict family that must fire on the pathology
    planted: str  # one line for the table
    evidence: str  # a regular expression the verdict's metric, summary or details must match
    options: tuple[str, ...] = ()  # extra `gradscope record` options


CASES = (
    Case("label_noise", "coherence", "90% of labels replaced by random classes",
         r"coherence\.m_coherence .*near-orthogonal"),
    Case(
        "conflicting_tasks",
        "conflict",
        "two sources with opposite targets (y_b = -y_a) through one model",
        r"conflict\.cos .*conflict between",
        ("--profile", "full"),
    ),
    Case("lr_edge", "stability", "SGD at lr = 2.5 / lambda_max (edge: 2 / lambda_max)",
         r"stability\.(loss_spike_z|grad_norm_spike_z|grad_norm_preclip_spike_z|update_ratio|nonfinite) "),
    Case("vanishing", "stability", "12-layer sigmoid MLP, default init",
         r"stability\.grad_norm_rel .*vanishing gradients"),
    Case("dead_layer", "stability", "ReLU layer with bias -20: zero output, zero gradient",
         r"stability\.dead .*dead layer"),
    Case("batch_noise", "noise", "full batch 2048 on a problem with B_simple ~ 30",
         r"noise\.b_simple .*compute wasted"),
    Case("attention_growth", "stability", "tiny causal transformer, AdamW warmed up to lr 1.0",
         r"stability\.attn_(max_logit|entropy_rel) .*attention (logit growth|entropy collapse)"),
    Case("dead_units", "stability", "first-layer ReLU biases shifted by -1.5 (~2.6 sd)",
         r"stability\.dead_units .*dead units"),
    Case("sharp_edge", "stability", "tanh MLP, SGD at lr = 3 / lambda_max (edge: 2 / lambda_max)",
         r"stability\.sharpness_edge_ratio .*edge of stability", ("--curvature", "every=5")),
    Case("clipped_spike", "stability",
         "one batch with inputs x1000 under clip_grad_norm_(..., 0.5): pre-clip norm ~780, grad_norm 0.5",
         r"grad-norm spikes before clipping \(1 hidden by it"),
)
VARIANTS = ("pathology", "healthy")


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 2


def _record(case: Case, variant: str, root: Path) -> tuple[Path, str]:
    """Record one script; returns the run directory and the recorder's output."""
    run_dir = root / f"{case.name}-{variant}"
    command = [sys.executable, str(CASES_DIR / f"{case.name}.py")]
    command += ["--healthy"] if variant == "healthy" else []
    proc = gradscope("record", "--out", str(run_dir), *case.options, "--", *command, cwd=CASES_DIR)
    output = f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return run_dir, output


def _analyze(run_dir: Path) -> Analysis:
    # an analysis that raises fails the test: a crash never counts as a detection
    return analyze_run(open_run(run_dir), raise_errors=True)


def record_all(root: Path) -> dict[tuple[str, str], tuple[Path, str]]:
    """Every case and twin, recorded side by side (one process per CPU)."""
    jobs = [(case, variant) for case in CASES for variant in VARIANTS]
    with ThreadPoolExecutor(max_workers=min(_cpus(), len(jobs))) as pool:
        done = pool.map(lambda job: _record(*job, root), jobs)
        return {(case.name, variant): result for (case, variant), result in zip(jobs, done, strict=True)}


@pytest.fixture(scope="module")
def clinic(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], tuple[Path, str]]:
    return record_all(tmp_path_factory.mktemp("clinic"))


def _verdicts(clinic: dict, case: Case, variant: str) -> dict[str, Verdict]:
    run_dir, output = clinic[(case.name, variant)]
    assert output.startswith("exit 0"), f"{case.name} ({variant}) failed under gradscope record:\n{output}"
    assert open_run(run_dir).meta["status"] == "finished"
    return {v.family: v for v in _analyze(run_dir).verdicts}


def _show(verdicts: dict[str, Verdict]) -> str:
    return "\n".join(f"  {v.family}: {v.level}: {v.summary}" for v in verdicts.values())


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_pathology_fires_in_its_family(clinic: dict, case: Case) -> None:
    """A warn or alert whose evidence names the planted cause: a crash ("failed") or an
    unrelated finding never counts as a detection."""
    verdicts = _verdicts(clinic, case, "pathology")
    verdict = verdicts[case.family]
    assert verdict.level in ("warn", "alert"), f"{case.name}: {case.family} missed it\n{_show(verdicts)}"
    evidence = " ".join((verdict.metric, verdict.summary, *verdict.details))
    assert re.search(case.evidence, evidence), f"{case.name}: wrong evidence\n{_show(verdicts)}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_healthy_twin_is_quiet(clinic: dict, case: Case) -> None:
    """No warn, alert or failed analysis in any family ("no data" is honest: a twin without
    named tasks has nothing for conflict to judge), and data in the case's own family."""
    verdicts = _verdicts(clinic, case, "healthy")
    loud = [v for v in verdicts.values() if v.level not in ("ok", "no data")]
    assert not loud, f"{case.name} healthy twin: false alarm\n{_show(verdicts)}"
    assert verdicts[case.family].level == "ok", f"{case.name} twin not judged\n{_show(verdicts)}"


def test_attention_probes_warn_before_the_loss_diverges(clinic: dict) -> None:
    """The attention finding's first step comes before the loss diverges (climbs back above
    its first value after falling), and it does diverge."""
    run_dir, output = clinic[("attention_growth", "pathology")]
    assert output.startswith("exit 0"), output
    verdict = _analyze(run_dir).verdict("stability")
    loss = open_run(run_dir).table("steps", ["step", "loss"]).set_index("step")["loss"].sort_index()
    past_minimum = loss.index > loss.idxmin()
    diverged = loss.index[past_minimum & (loss > loss.iloc[0]).to_numpy()]
    assert len(diverged), f"the pathology's loss never diverged: {loss.round(2).tolist()}"
    assert verdict.metric.startswith("stability.attn_") and min(verdict.steps) < diverged.min(), verdict


def _table_row(case: Case, pathology: Verdict, healthy: dict[str, Verdict]) -> str:
    quiet = all(v.level in ("ok", "no data") for v in healthy.values())
    twin = healthy[case.family]
    return (
        f"| {case.name} | {case.planted} | {case.family} | {pathology.level} | {pathology.summary} "
        f"({pathology.metric} = {pathology.value:.3g} vs {pathology.threshold:.3g}) | "
        f"{'all ok' if quiet else 'NOT QUIET'}; {twin.metric or case.family} = {twin.value:.3g} |"
    )


def main() -> None:
    """Record the clinic into ./clinic-runs and print the docs/clinic.md table."""
    root = Path("clinic-runs").resolve()
    root.mkdir(exist_ok=True)
    runs = record_all(root)
    print("| case | planted | family | level | evidence (value vs threshold) | healthy twin |")
    print("|---|---|---|---|---|---|")
    for case in CASES:
        verdicts = {
            variant: {v.family: v for v in _analyze(runs[(case.name, variant)][0]).verdicts}
            for variant in VARIANTS
        }
        print(_table_row(case, verdicts["pathology"][case.family], verdicts["healthy"]))
        for variant in VARIANTS:
            print(f"<!-- {case.name} {variant}:\n{_show(verdicts[variant])} -->", file=sys.stderr)


if __name__ == "__main__":
    main()
