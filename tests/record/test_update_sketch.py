"""LAYERS.update_sketch: a fixed count-sketch projection whose inner products estimate the
updates' (exact for small parameters), recorded on a real optimizer step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gradscope.record.recorder import Recorder
from gradscope.record.update_sketch import SKETCH_DIM, row_signs, salt_of, sketch_one, update_sketches
from gradscope.store.reader import open_run


def test_small_parameters_are_stored_exactly():
    u, v = torch.randn(40), torch.randn(40)
    su, sv = sketch_one(u, salt_of(0, 3)), sketch_one(v, salt_of(0, 3))
    assert torch.equal(su[:40], u) and float(su.dot(sv)) == float(u.dot(v))


def test_sketch_is_the_dense_projection_it_documents():
    """S(u) = P u with P[j mod k, j] = r_{j // k}: built densely on a tiny case (a partial
    last row included), the sketch and its inner products match to float rounding."""
    d, salt = 3 * SKETCH_DIM + 17, salt_of(5, 2)
    signs = row_signs(4, salt, torch.device("cpu"))
    dense = torch.zeros(SKETCH_DIM, d)
    for j in range(d):
        dense[j % SKETCH_DIM, j] = signs[j // SKETCH_DIM]
    u, v = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
    torch.testing.assert_close(sketch_one(u, salt), (dense.double() @ u).float())
    estimate = float(sketch_one(u, salt).double() @ sketch_one(v, salt).double())
    assert estimate == pytest.approx(float((dense.double() @ u) @ (dense.double() @ v)), rel=1e-5)


def test_inner_products_are_unbiased_with_the_count_sketch_variance():
    generator = torch.Generator().manual_seed(0)
    u = torch.randn(5000, generator=generator)
    v = 0.6 * u + 0.8 * torch.randn(5000, generator=generator)  # cos ~ 0.6
    true = float(u.dot(v))
    estimates = np.array([float(sketch_one(u, salt_of(0, p)).dot(sketch_one(v, salt_of(0, p))))
                          for p in range(300)])
    sd = np.sqrt((float(u.dot(u)) * float(v.dot(v)) + true**2) / SKETCH_DIM)
    assert abs(estimates.mean() - true) < 4 * sd / np.sqrt(len(estimates))  # unbiased
    assert 0.7 * sd < estimates.std() < 1.3 * sd  # the variance the module docstring states


def test_the_projection_is_fixed_and_linear():
    """Same parameter, same projection: u_t = -c u_{t-1} reads cos = -1 exactly."""
    u = torch.randn(3, 1000)
    first, second = sketch_one(u, salt_of(0, 1)), sketch_one(-2.5 * u, salt_of(0, 1))
    cos = float(first.dot(second) / (first.norm() * second.norm()))
    assert abs(cos + 1) < 1e-6
    assert not torch.equal(sketch_one(u, salt_of(0, 2)), first)  # another parameter: independent


def test_recorded_sketch_is_the_projection_of_the_true_update(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 20), nn.Tanh(), nn.Linear(20, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(32, 30), torch.randn(32, 2)
    params = list(model.parameters())
    expected = []
    with Recorder(model, optimizer, run_dir=tmp_path / "run", profile="minimal"):
        for _ in range(3):
            optimizer.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            before = [p.detach().clone() for p in params]
            optimizer.step()
            expected.append(update_sketches(params, before).numpy())
    layers = open_run(tmp_path / "run").table("layers").sort_values("step", kind="stable")
    for step, sketches in enumerate(expected):
        recorded = np.stack(layers[layers["step"] == step]["update_sketch"].to_list())
        np.testing.assert_allclose(recorded, sketches, rtol=1e-6, atol=1e-9)
