"""The idioms, how each is spawned, and the four assertions every idiom gets (issue 10)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conformance import checks
from tests.conformance.checks import Normalise, Spawned
from tests.e2e.harness import gradscope, run_plain

HERE = Path(__file__).resolve().parent
SCRIPTS = HERE / "scripts"


@dataclass(frozen=True)
class Idiom:
    script: str
    args: tuple[str, ...] = ()
    normalise: Normalise = checks.same_name


IDIOMS = {
    "baseline_mean": Idiom("baseline_mean.py"),
    "baseline_accumulate": Idiom("baseline_accumulate.py"),
    "baseline_lbfgs": Idiom("baseline_lbfgs.py"),
    "manual_data_sgd": Idiom("manual_data_sgd.py"),
    "compile_linear": Idiom("compile_linear.py", normalise=checks.strip_compiled),
    "module_compile": Idiom("module_compile.py"),
    "parametrizations": Idiom("parametrizations.py"),
    "legacy_norms": Idiom("legacy_norms.py"),
    "scaler_autocast": Idiom("scaler_autocast.py"),
    "scaler_plain": Idiom("scaler_plain.py"),
    "lm_ignore_index": Idiom("lm_ignore_index.py"),
    "label_smoothing": Idiom("label_smoothing.py"),
    "penalty_reg_first": Idiom("penalty.py", ("reg+ce",)),
    "penalty_ce_first": Idiom("penalty.py", ("ce+reg",)),
    "weighted_loss": Idiom("weighted_loss.py"),
    "checkpoint_reentrant": Idiom("checkpointing.py", ("reentrant",)),
    "checkpoint_non_reentrant": Idiom("checkpointing.py", ("non-reentrant",)),
    "gradient_penalty": Idiom("gradient_penalty.py"),
    "pcgrad": Idiom("pcgrad.py"),
    "closure_accumulate": Idiom("closure_accumulate.py"),
    "hook_raises": Idiom("hook_raises.py"),
    "functional_grad": Idiom("functional_grad.py"),
    "sparse_embedding": Idiom("sparse_embedding.py"),
    "sparse_adam": Idiom("sparse_adam.py"),
    "mil": Idiom("mil.py"),
    "embedding_bag": Idiom("embedding_bag.py"),
    "eval_batchnorm": Idiom("eval_batchnorm.py"),
    "none_module": Idiom("none_module.py"),
    "shared_module": Idiom("shared_module.py"),
    "nonscalar_backward": Idiom("nonscalar_backward.py"),
}


def spawn(name: str, tmp: Path) -> Spawned:
    """Plain with GS_REFERENCE (the reference pass), then recorded without it."""
    idiom = IDIOMS[name]
    command = [sys.executable, str(SCRIPTS / idiom.script), *idiom.args]
    env = {"PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    plain = run_plain(command, tmp, env=env, cwd=SCRIPTS)
    run_dir = tmp / "run"
    proc = gradscope("record", "--out", str(run_dir), "--", *command, env=env, cwd=SCRIPTS)
    recorded = checks.Result(proc.returncode, proc.stdout, proc.stderr, None)
    return Spawned(name, plain, recorded, run_dir, idiom.normalise)


@pytest.mark.slow
class Conformance:
    """Subclasses list their ``idioms``; conftest parametrizes ``idiom`` over them."""

    idioms: tuple[str, ...] = ()

    def test_reference_is_sound(self, spawned: Spawned) -> None:
        assert not (problems := checks.check_reference(spawned)), checks.report(problems, spawned)

    def test_training_output_identical(self, spawned: Spawned) -> None:
        assert not (problems := checks.check_output(spawned)), checks.report(problems, spawned)

    def test_step_count(self, spawned: Spawned) -> None:
        assert not (problems := checks.check_steps(spawned)), checks.report(problems, spawned)

    def test_step_loss(self, spawned: Spawned) -> None:
        assert not (problems := checks.check_loss(spawned)), checks.report(problems, spawned)

    def test_per_sample(self, spawned: Spawned) -> None:
        assert not (problems := checks.check_per_sample(spawned)), checks.report(problems, spawned)

    def test_per_sample_scale(self, spawned: Spawned) -> None:
        assert not (problems := checks.check_scale(spawned)), checks.report(problems, spawned)
