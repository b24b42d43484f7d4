"""`gradscope record` on a shuffled-DataLoader script that clips: each sample's dataset index
and loss, and the pre-clip gradient norm, against the script's own values."""

from __future__ import annotations

import numpy as np
import pytest

from gradscope.record.sample_index import AMBIGUOUS
from gradscope.store.reader import open_run
from tests.e2e.harness import python, run_recorded

pytestmark = pytest.mark.slow


def _record(tmp_path, *args: str):
    recorded = run_recorded(python("train_sample_ids.py", *args), tmp_path / "run", tmp_path)
    assert recorded.returncode == 0, recorded.stderr
    return recorded.reference, open_run(tmp_path / "run")


def _per_step(run, step: int):
    samples = run.table("samples")
    first = samples[(samples["step"] == step) & (samples["layer"] == "2")]
    return first.sort_values(["micro", "sample"])


@pytest.mark.parametrize(
    "args", [(), ("--workers", "2", "--drop-last")], ids=["workers0", "workers2-drop-last"]
)
def test_indices_losses_and_preclip_norm_are_the_scripts(tmp_path, args):
    reference, run = _record(tmp_path, *args)
    assert len(reference) == (8 if "--drop-last" in args else 10)
    steps = run.table("steps").sort_values("step")
    for step, expected in enumerate(reference):
        rows = _per_step(run, step)
        assert rows["index"].tolist() == expected["index"]  # the shuffled sampler's, item by item
        np.testing.assert_allclose(rows["loss"], expected["loss"], rtol=1e-6)
    np.testing.assert_allclose(steps["grad_norm_preclip"], [r["preclip"] for r in reference], rtol=1e-5)
    clipped = steps["grad_norm_preclip"] > 0.5
    assert clipped.any(), "the test needs steps that clip"
    np.testing.assert_allclose(steps.loc[clipped, "grad_norm"], 0.5, rtol=1e-4)  # what the optimizer saw
    assert run.meta["sample_index"] == {"sampler": len(reference)}
    assert run.meta["sample_loss"] == {"graph": len(reference)}


def test_declared_losses_and_indices(tmp_path):
    """A loss whose graph does not hold per-sample values exactly, named by one-line calls."""
    reference, run = _record(tmp_path, "--declare")
    for step, expected in enumerate(reference):
        rows = _per_step(run, step)
        assert rows["index"].tolist() == expected["index"]
        np.testing.assert_allclose(rows["loss"], expected["loss"], rtol=1e-6)
    assert run.meta["sample_index"] == {"declared": len(reference)}
    assert run.meta["sample_loss"] == {"declared": len(reference)}


def test_look_ahead_loader_gives_no_indices(tmp_path):
    """A generator that fetches one batch ahead: batch k is fetched before backward k - 1
    ends, so matching by order would name the wrong items. Indices stay -1, meta says why."""
    reference, run = _record(tmp_path, "--lookahead")
    samples = run.table("samples")
    assert (samples["index"] == -1).all()
    assert any(AMBIGUOUS in reason for reason in run.meta["sample_index"])
    assert run.meta["sample_loss"] == {"graph": len(reference)}
