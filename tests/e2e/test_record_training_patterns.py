"""`gradscope record` on training code as people write it (issue 10): torch.compile,
parametrizations, gradient checkpointing, gradient penalties, PCGrad, multiple-instance
learning, EmbeddingBag. Training output is byte-identical; per-sample shards equal a naive
per-sample loop, or meta.json's layer table says why a layer has no rows."""

from __future__ import annotations

import numpy as np
import pytest

from gradscope.store.reader import open_run
from tests.e2e.harness import python, run_plain, run_recorded
from tests.e2e.test_record_per_sample import _reference_step0, _script_module

pytestmark = pytest.mark.slow
RTOL = 1e-4  # float32 models


def _record(script: str, tmp_path, *args: str, options: tuple[str, ...] = ()):
    plain = run_plain(python(script, *args), tmp_path)
    recorded = run_recorded(python(script, *args), tmp_path / "run", tmp_path, options=options)
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout == plain.stdout  # training is untouched
    run = open_run(tmp_path / "run")
    return run, {entry["name"]: entry for entry in run.meta["layers"]}


def _assert_step0_matches(run, script: str):
    module = _script_module(script)
    expected = _reference_step0(module)
    samples = run.table("samples")
    step0 = samples[(samples["step"] == 0) & (samples["micro"] == 0)]
    assert set(step0["layer"]) == set(expected), (set(step0["layer"]), set(expected))
    for layer, want in expected.items():
        got = step0[step0["layer"] == layer].sort_values("sample")["norm2"].to_numpy()
        np.testing.assert_allclose(got, want["norm2"], rtol=RTOL, atol=RTOL * want["norm2"].max(),
                                   err_msg=layer)


@pytest.mark.parametrize("style", ["wrapper", "method"])
def test_torch_compile_trains_unchanged_and_is_not_covered(style, tmp_path):
    run, layers = _record("train_compiled.py", tmp_path, "--style", style)
    assert not any(entry["covered"] for entry in layers.values())
    assert len(run.table("samples")) == 0
    if style == "wrapper":  # the user's names, not _orig_mod.fc
        assert set(layers) == {"fc", "head"}
        assert all("torch.compile" in entry["reason"] for entry in layers.values())


def test_parametrized_weights_train_unchanged_and_are_named_as_the_user_names_them(tmp_path):
    run, layers = _record("train_spectral.py", tmp_path)
    assert set(layers) == {"0", "2", "4"}
    for name in ("0", "2"):
        assert not layers[name]["covered"] and "parametrized" in layers[name]["reason"]
        assert "parametrizations.weight.original" in layers[name]["params"][1]["name"]
    assert layers["4"]["covered"] and layers["4"]["rows_steps"] == 4
    assert set(run.table("samples")["layer"]) == {"4"}


@pytest.mark.parametrize("reentrant", ["1", "0"])
def test_gradient_checkpointing_matches_the_naive_loop(reentrant, tmp_path):
    run, layers = _record("train_checkpoint.py", tmp_path, "--reentrant", reentrant)
    _assert_step0_matches(run, "train_checkpoint")
    assert all(entry["covered"] and entry["rows_steps"] == 3 for entry in layers.values()), layers


def test_embedding_bag_rows_are_per_bag_and_exact(tmp_path):
    run, layers = _record("train_bag.py", tmp_path)
    _assert_step0_matches(run, "train_bag")
    assert layers["embedding"]["covered"] and layers["fc"]["covered"]


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ("train_gradient_penalty.py", "double backward (create_graph=True)"),
        ("train_mil.py", "batch size: 13 (encoder), 2 (attention), 3 (attention), 4 (attention), 5 (head)"),
    ],
)
def test_steps_without_exact_rows_are_reported_not_covered(script, reason, tmp_path):
    run, layers = _record(script, tmp_path)
    assert len(run.table("samples")) == 0
    for entry in layers.values():
        assert not entry["covered"] and entry["rows_steps"] == 0
        assert any(reason in r for r in entry["reasons"]), entry["reasons"]


def test_pcgrad_steps_are_reported_not_covered(tmp_path):
    run, layers = _record("train_pcgrad.py", tmp_path)
    for entry in layers.values():
        assert not entry["covered"]
        assert any("several backward passes" in r for r in entry["reasons"]), entry["reasons"]
