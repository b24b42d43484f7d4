"""Sketches: exact against P_out G_i P_in^T computed densely, unbiased for <g_i, g_j>."""

import torch
from torch import nn

from gradscope.record.engine import EngineConfig

from .models import TinyGPT, lm_loss, squared_error
from .reference import assert_matches_reference, engine_stats, reference_layer_stats


def test_sketch_exact_on_tiny_gpt_both_routes():
    torch.manual_seed(0)
    model = TinyGPT().double()
    ids = torch.randint(0, 11, (3, 6))
    for route in ("ghost", "materialize"):
        config = EngineConfig(sketch_dim=3, seed=7, route=route)
        assert_matches_reference(model, lambda: lm_loss(model, ids), config)


def test_sketch_is_deterministic_per_seed_and_leaves_global_rng_alone():
    torch.manual_seed(0)
    layer = nn.Linear(4, 3).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    state = torch.get_rng_state()
    first, _ = engine_stats(layer, lambda: layer(x).pow(2).sum(1), EngineConfig(seed=3))
    again, _ = engine_stats(layer, lambda: layer(x).pow(2).sum(1), EngineConfig(seed=3))
    other, _ = engine_stats(layer, lambda: layer(x).pow(2).sum(1), EngineConfig(seed=4))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first[""].sketch, again[""].sketch)
    assert not torch.allclose(first[""].sketch, other[""].sketch)


def test_sketch_inner_products_are_unbiased():
    torch.manual_seed(0)
    layer = nn.Linear(5, 4).double()  # weight: Kronecker sketch, bias: dense sketch
    x = torch.randn(3, 2, 5, dtype=torch.float64)
    target = torch.randn(3, 2, 4, dtype=torch.float64)

    def loss():
        return squared_error(layer(x), target)

    products = []
    for seed in range(300):
        stats, engine = engine_stats(layer, loss, EngineConfig(sketch_dim=2, seed=seed))
        sketch = stats[""].sketch
        products.append(sketch @ sketch.t())
    products = torch.stack(products)  # (seeds, B, B)
    truth = reference_layer_stats(layer, loss, engine)[""]["gram"]
    error = products.mean(0) - truth
    standard_error = products.std(0) / len(products) ** 0.5
    assert (error.abs() <= 4 * standard_error + 1e-12).all(), (error, standard_error)
