"""Probes recorded in a training loop: dead units, curvature against the full Hessian, and
a run with curvature bit-identical to a plain one."""

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import gradscope
from gradscope.record.config import RecordConfig
from gradscope.record.probes.curvature import hutchinson, lanczos_top
from gradscope.store.reader import open_run


def _probes(run_dir, probe):
    table = open_run(run_dir).table("probes")
    return table[table["probe"] == probe]


def test_dead_units_on_a_relu_layer_with_planted_dead_units(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    with torch.no_grad():
        model[0].bias[:6] = -100.0  # units 0..5 never fire
        model[0].bias[6:] = 100.0  # the others always do
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    x = torch.randn(32, 8)
    with gradscope.Recorder(model, optimizer, run_dir=tmp_path / "run"):
        for _ in range(2):
            optimizer.zero_grad()
            F.cross_entropy(model(x), torch.arange(32) % 4).backward()
            optimizer.step()
    rows = _probes(tmp_path / "run", "activation").set_index(["step", "layer", "key"])["value"]
    assert rows[(0, "2", "dead_frac")] == pytest.approx(6 / 16)
    assert rows[(0, "0", "dead_frac")] == 0.0
    assert rows[(0, "2", "units")] == 16
    with torch.no_grad():
        hidden = torch.relu(torch.addmm(model[0].bias, x, model[0].weight.T))  # after 2 tiny steps: close
    assert rows[(1, "0", "rms")] == pytest.approx(float(x.square().mean().sqrt()), rel=1e-6)
    assert rows[(1, "0", "max_abs")] == pytest.approx(float(x.abs().max()), rel=1e-6)
    assert rows[(1, "2", "max_abs")] == pytest.approx(float(hidden.abs().max()), rel=1e-3)


def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def _full_hessian(model, x, y):
    params = [p.detach().clone() for p in model.parameters()]
    shapes = [p.shape for p in params]

    def loss(flat):
        pieces, start = [], 0
        for shape in shapes:
            pieces.append(flat[start:start + shape.numel()].reshape(shape))
            start += shape.numel()
        return F.mse_loss(torch.func.functional_call(model, dict(zip(
            [n for n, _ in model.named_parameters()], pieces)), (x,)), y)

    return torch.autograd.functional.hessian(loss, torch.cat([p.reshape(-1) for p in params]))


def test_lanczos_and_hutchinson_against_the_full_hessian():
    model = _tiny()
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    hessian = _full_hessian(model, x, y)
    generator = torch.Generator().manual_seed(0)
    like = torch.zeros(1, dtype=torch.float64)
    top, _ = lanczos_top(lambda v: hessian @ v, hessian.shape[0], 20, generator, like)
    assert top == pytest.approx(float(torch.linalg.eigvalsh(hessian).max()), rel=1e-8)
    trace, se = hutchinson(lambda v: hessian @ v, hessian.shape[0], 200, generator, like)
    assert abs(trace - float(hessian.trace())) <= 2 * se
    assert 0 < se < 0.2 * abs(float(hessian.trace()))


def test_recorded_sharpness_and_edge_for_sgd(tmp_path):
    model = _tiny()
    lr = 0.05
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    expected = []
    config = RecordConfig(curvature=1)
    with gradscope.Recorder(model, optimizer, run_dir=tmp_path / "run", config=config):
        for _ in range(3):
            optimizer.zero_grad()
            F.mse_loss(model(x), y).backward()
            hessian = _full_hessian(model, x, y)
            expected.append((float(torch.linalg.eigvalsh(hessian).max()), float(hessian.trace())))
            optimizer.step()
    rows = _probes(tmp_path / "run", "curvature").pivot(index="step", columns="key", values="value")
    assert list(rows.index) == [0, 1, 2]
    for step, (top, trace) in enumerate(expected):
        assert rows.loc[step, "lambda_max"] == pytest.approx(top, rel=1e-6)
        assert rows.loc[step, "edge"] == pytest.approx(2 / lr)
        assert abs(rows.loc[step, "trace"] - trace) <= 3 * rows.loc[step, "trace_se"]


class Net(nn.Module):
    """Dropout and a train-mode BatchNorm: the forward has random draws and side effects."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3))
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.body(x))


def _train(run_dir=None):
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    data = torch.randn(64, 6), torch.randint(0, 3, (64,))
    losses, recorder = [], None
    if run_dir is not None:
        recorder = gradscope.Recorder(model, optimizer, run_dir=run_dir, config=RecordConfig(curvature=1))
        recorder.start()
    for step in range(4):
        index = torch.randperm(64)[:16]
        optimizer.zero_grad()
        loss = F.cross_entropy(model(data[0][index]), data[1][index])
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters()]
        optimizer.step()
        losses.append((loss.detach(), grads, step))
    if recorder is not None:
        recorder.close()
    return losses, copy.deepcopy(model.state_dict()), torch.get_rng_state()


def test_curvature_leaves_training_bit_identical(tmp_path):
    plain_losses, plain_state, plain_rng = _train()
    losses, state, rng = _train(tmp_path / "run")
    for (a, grads_a, _), (b, grads_b, _) in zip(plain_losses, losses):
        assert torch.equal(a, b)
        assert all(torch.equal(g, h) for g, h in zip(grads_a, grads_b))
    assert plain_state.keys() == state.keys()
    assert all(torch.equal(plain_state[k], state[k]) for k in state)  # weights and BN buffers
    assert torch.equal(plain_rng, rng)
    rows = _probes(tmp_path / "run", "curvature").pivot(index="step", columns="key", values="value")
    assert list(rows.index) == [0, 1, 2, 3]
    assert (rows["lambda_max"] > 0).all()
    # the replayed loss is the user's loss: same dropout masks, same batch statistics
    assert rows["loss"].tolist() == pytest.approx([float(a) for a, _, _ in plain_losses], rel=1e-6)
    meta = open_run(tmp_path / "run").meta
    assert not meta.get("failures"), meta.get("failures")


def test_minimal_profile_records_no_probes(tmp_path):
    model = _tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    with gradscope.Recorder(model, optimizer, run_dir=tmp_path / "run", profile="minimal"):
        optimizer.zero_grad()
        F.mse_loss(model(x), y).backward()
        optimizer.step()
    assert not open_run(tmp_path / "run").has("probes")
    assert F.mse_loss.__name__ == "mse_loss" and F.mse_loss is torch.nn.functional.mse_loss


def test_adam_sharpness_is_of_the_preconditioned_hessian(tmp_path):
    model = _tiny()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.9, 0.999), eps=1e-8)
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    expected = []
    with gradscope.Recorder(model, optimizer, run_dir=tmp_path / "run", config=RecordConfig(curvature=1)):
        for step in range(3):
            optimizer.zero_grad()
            F.mse_loss(model(x), y).backward()
            scales = []
            for p in model.parameters():
                previous = optimizer.state.get(p, {}).get("exp_avg_sq")
                v = 0.001 * p.grad.square() + (0 if previous is None else 0.999 * previous)
                scales.append(((v / (1 - 0.999 ** (step + 1))).sqrt() + 1e-8).rsqrt().reshape(-1))
            d = torch.cat(scales)
            hessian = _full_hessian(model, x, y)
            expected.append(float(torch.linalg.eigvalsh(d[:, None] * hessian * d[None, :]).max()))
            optimizer.step()
    rows = _probes(tmp_path / "run", "curvature").pivot(index="step", columns="key", values="value")
    assert rows["lambda_max"].tolist() == pytest.approx(expected, rel=1e-5)
    assert rows["edge"].tolist() == pytest.approx([(2 + 2 * 0.9) / (0.1 * 0.01)] * 3)


def test_transformer_encoder_attention_with_causal_and_padding_masks(tmp_path):
    """nn.TransformerEncoderLayer hands MultiheadAttention float masks: the recorded
    entropy equals the entropy of the attention weights the module itself computes."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
    encoder, head = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False), nn.Linear(16, 5)
    optimizer = torch.optim.SGD([*encoder.parameters(), *head.parameters()], lr=0.0)
    src = torch.randn(3, 6, 16) * 3
    causal = nn.Transformer.generate_square_subsequent_mask(6)
    padding = torch.zeros(3, 6, dtype=torch.bool)
    padding[1, 4:] = True
    with gradscope.Recorder(run_dir=tmp_path / "run"):
        for _ in range(2):
            optimizer.zero_grad()
            out = encoder(src, mask=causal, src_key_padding_mask=padding, is_causal=True)
            F.cross_entropy(head(out).flatten(0, 1), torch.arange(18) % 5).backward()
            optimizer.step()
    attention = encoder.layers[0].self_attn
    _, weights = attention(src, src, src, attn_mask=causal, key_padding_mask=padding,
                           average_attn_weights=False)
    plogp = torch.where(weights > 0, weights * weights.log(), torch.zeros_like(weights))
    expected = (-plogp.sum(-1)).mean(dim=(0, 2)).tolist()
    rows = _probes(tmp_path / "run", "attention")
    rows = rows[(rows["step"] == 1) & (rows["layer"] == "layers.0.self_attn")].set_index("key")["value"]
    assert [rows["entropy.h0"], rows["entropy.h1"]] == pytest.approx(expected, rel=1e-4)
    assert rows["weight_bound.h0"] > 0


def test_a_failing_probe_stops_only_the_cheap_probes(tmp_path, monkeypatch):
    from gradscope.record.probes import activations

    def broken(x, dim):
        raise RuntimeError("planted")

    monkeypatch.setattr(activations, "activation_stats", broken)
    model = _tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 2, dtype=torch.float64)
    losses = []
    with gradscope.Recorder(model, optimizer, run_dir=tmp_path / "run", config=RecordConfig(curvature=1)):
        for _ in range(3):
            optimizer.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            losses.append(float(loss))
    run = open_run(tmp_path / "run")
    assert [f["component"] for f in run.meta["failures"]] == ["probes"]
    assert "planted" in run.meta["failures"][0]["message"]
    assert sorted(_probes(tmp_path / "run", "curvature")["step"].unique()) == [0, 1, 2]
    assert len(run.table("steps")) == 3 and all(np.isfinite(losses))
