"""Idioms 6, 7, 8, 11, 12 and an extra: backward calls that are not one plain
loss.backward() per step (checkpointing, double backward, PCGrad's retained graph, a
closure after an accumulated micro-batch, a hook raising mid-backward, autograd.grad only)."""

import math
from pathlib import Path

import pytest

from tests.conformance.suite import Conformance
from tests.e2e.harness import gradscope

REPO = Path(__file__).resolve().parents[2]


class TestBackwardShapes(Conformance):
    idioms = (
        "checkpoint_reentrant",
        "checkpoint_non_reentrant",
        "gradient_penalty",
        "pcgrad",
        "closure_accumulate",
        "hook_raises",
        "functional_grad",
    )


def _failed_rules(run_dir: Path) -> tuple[int, dict[str, str]]:
    """Exit code and {rule: its fail line} of `gradscope check --config configs/default.toml`."""
    proc = gradscope("check", str(run_dir), "--config", str(REPO / "configs" / "default.toml"))
    lines = [line.removeprefix("fail: ") for line in proc.stdout.splitlines() if line.startswith("fail:")]
    return proc.returncode, {line.split("  ")[0]: line for line in lines}


@pytest.mark.slow
def test_closure_after_a_micro_batch_is_healthy(spawner) -> None:
    """Idiom 11: finite gradient norms, and `gradscope check` fails no rule on it that it
    does not fail on the same loop without a closure (baseline_accumulate)."""
    run = spawner("closure_accumulate")
    steps, layers = run.table("steps"), run.table("layers")
    bad = [s for s, g in zip(steps.get("step", []), steps.get("grad_norm", [])) if not math.isfinite(g)]
    assert not bad, f"steps with a non-finite grad_norm: {bad}"
    if len(layers):
        nan = layers[~layers["grad_norm"].map(math.isfinite)]
        assert nan.empty, f"layers rows with non-finite grad_norm: {nan[['step', 'param']].values.tolist()}"
    code, failed = _failed_rules(run.run_dir)
    control_code, control = _failed_rules(spawner("baseline_accumulate").run_dir)
    extra = [line for rule, line in failed.items() if rule not in control]
    assert not extra, f"gradscope check fails only with the closure: {extra}"
    assert code == control_code, f"gradscope check exit {code}, {control_code} without the closure"


@pytest.mark.slow
def test_a_raising_hook_reaches_the_script_untouched(spawner) -> None:
    """Idiom 12: the script's own except clause sees the user's FloatingPointError."""
    run = spawner("hook_raises")
    line = "batch 2 skipped: non-finite gradient in fc1's output"
    assert line in run.recorded.stdout, run.recorded.stderr[-1500:]
