"""`gradscope record` on unmodified transformer, CNN and LSTM scripts: the per-sample shards
match a naive per-sample backward loop, and the report shows coverage."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest

from gradscope.store.reader import open_run
from tests.e2e.harness import SCRIPTS, gradscope, python, run_plain, run_recorded
from tests.record.reference import reference_layers, reference_per_sample_grads

RTOL = 1e-4  # float32 models


def _script_module(name: str):
    sys.path.insert(0, str(SCRIPTS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(SCRIPTS))


def _reference_step0(module) -> dict[str, dict[str, np.ndarray]]:
    """Per-layer norm2 and <c_i, W> for the first batch, from one backward per sample:
    these scripts' batch loss is the mean of ``per_sample_loss``, so c_i = g_i / B."""
    model, batches = module.build()
    first = batches[0]
    layers = reference_layers(model, lambda: module.per_sample_loss(model, first))
    params = [p for entries in layers.values() for _, p in entries]
    grads = reference_per_sample_grads(lambda: module.per_sample_loss(model, first), params)
    batch = grads[0].shape[0]
    by_id = {id(p): g / batch for p, g in zip(params, grads)}
    expected = {}
    for layer, entries in layers.items():
        flat = np.concatenate([by_id[id(p)].detach().flatten(1).double().numpy() for _, p in entries], 1)
        weights = np.concatenate([p.detach().reshape(-1).double().numpy() for _, p in entries])
        expected[layer] = {
            "norm2": (flat**2).sum(1),
            "weight_dot": flat @ weights,
            "dot_scale": np.sqrt((flat**2).sum(1)).max() * np.linalg.norm(weights),
        }
    return expected


@pytest.mark.parametrize(
    ("script", "options"),
    [
        ("train_transformer", ()),
        ("train_cnn", ()),
        ("train_lstm", ()),
        ("train_seqfirst", ("--batch-dim", "1")),
    ],
)
def test_per_sample_shards_match_a_naive_loop(script, options, tmp_path):
    plain = run_plain(python(f"{script}.py"), tmp_path)
    recorded = run_recorded(
        python(f"{script}.py"), tmp_path / "run", tmp_path, options=("--profile", "full", *options)
    )
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout == plain.stdout
    run = open_run(tmp_path / "run")
    step = run.table("steps").set_index("step").loc[0]
    samples = run.table("samples")
    step0 = samples[(samples["step"] == 0) & (samples["micro"] == 0)]
    expected = _reference_step0(_script_module(script))
    assert set(step0["layer"]) == set(expected), (set(step0["layer"]), set(expected))
    # stored values are contributions c_i; f = B turns them into g_i, read from the graph
    assert (step["per_sample_scale"], step["per_sample_scale_source"]) == (step0["sample"].nunique(), "read")
    for layer, want in expected.items():
        rows = step0[step0["layer"] == layer].sort_values("sample")
        for column in ("norm2", "weight_dot"):
            got = rows[column].to_numpy()
            # <g_i, W> can cancel to ~0 (scale-invariant layers): compare on the scale of
            # ||g_i|| ||W||, the denominator of the alignment cosine
            scale = want["dot_scale"] if column == "weight_dot" else np.abs(want[column]).max() + 1e-30
            np.testing.assert_allclose(
                got, want[column], rtol=RTOL, atol=RTOL * scale, err_msg=f"{layer}.{column}"
            )
    grams = run.table("gram")
    gram0 = grams[(grams["step"] == 0) & (grams["micro"] == 0)]
    for _, row in gram0.iterrows():
        matrix = np.asarray(row["values"]).reshape(row["size"], row["size"])
        diagonal = step0[step0["layer"] == row["layer"]].sort_values("sample")["norm2"].to_numpy()
        np.testing.assert_allclose(np.diag(matrix), diagonal, rtol=RTOL)
    assert not run.meta["failures"], run.meta["failures"]
    # the output head for GWA: a tied head's weight is reported under the embedding
    heads = {"train_transformer": "wte", "train_cnn": "fc", "train_lstm": "head", "train_seqfirst": "2"}
    assert run.meta["head"] == heads[script]


def test_report_shows_coverage_of_a_transformer(tmp_path):
    run_recorded(python("train_transformer.py"), tmp_path / "run", tmp_path)
    proc = gradscope("report", "--no-color", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    assert "per-sample coverage" in proc.stdout and "not covered" not in proc.stdout


def test_batchnorm_in_train_mode_is_reported_not_covered(tmp_path):
    script = tmp_path / "bn.py"
    script.write_text(
        "import torch\nfrom torch import nn\ntorch.manual_seed(0)\n"
        "m = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))\n"
        "o = torch.optim.SGD(m.parameters(), lr=0.1)\n"
        "for _ in range(2):\n"
        "    o.zero_grad(); m(torch.randn(16, 4)).pow(2).mean().backward(); o.step()\n"
    )
    run_recorded([sys.executable, str(script)], tmp_path / "run", tmp_path)
    run = open_run(tmp_path / "run")
    bn = next(entry for entry in run.meta["layers"] if entry["type"] == "BatchNorm1d")
    assert not bn["covered"] and "couples samples" in bn["reason"]
    assert "1" not in set(run.table("samples")["layer"])
    proc = gradscope("report", "--no-color", str(tmp_path / "run"))
    assert "not covered: 1 (BatchNorm1d" in proc.stdout


def test_a_sequence_first_model_is_detected_not_misread(tmp_path):
    """Without --batch-dim, dim 0 of [T, B, d] would pass for the batch: the attention
    module's batch_first=False exposes it, that step is dropped and the rest use dim 1."""
    recorded = run_recorded(python("train_seqfirst.py"), tmp_path / "run", tmp_path)
    assert recorded.returncode == 0
    assert "sequence-first" in recorded.stderr
    samples = open_run(tmp_path / "run").table("samples")
    assert 0 not in set(samples["step"])
    assert set(samples.groupby(["step", "layer"])["sample"].nunique()) == {5}
