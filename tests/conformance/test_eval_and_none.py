"""Idiom 13: a BatchNorm model switched to eval() for validation before the run ends, and a
module with a parameter whose forward returns None."""

import pytest

from tests.conformance.suite import Conformance


class TestEvalAndNone(Conformance):
    idioms = ("eval_batchnorm", "none_module")


@pytest.mark.slow
def test_batchnorm_trained_in_train_mode_is_not_covered(spawner) -> None:
    """It ends the run in eval mode; what counts is how it was trained (never per-sample)."""
    run = spawner("eval_batchnorm")
    entry = run.layers().get("1")
    assert entry is not None, f"no meta.json entry for the BatchNorm; layers {sorted(run.layers())}"
    assert entry["covered"] is False and entry["reason"], f"BatchNorm entry: {entry}"
    samples = run.table("samples")
    assert not len(samples) or "1" not in set(samples["layer"]), "BatchNorm rows recorded"
