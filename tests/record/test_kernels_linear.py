"""Linear kernel against the per-sample autograd loop."""

import pytest
import torch
from torch import nn

from gradscope.record.engine import EngineConfig

from .models import squared_error
from .reference import assert_matches_reference, engine_stats

SHAPES = [(4, 5), (4, 3, 5), (4, 2, 3, 5)]  # [B, d], [B, T, d], [B, H, T, d]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("route", ["ghost", "materialize", "auto"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_linear_matches_reference(shape, bias, route, reduction):
    torch.manual_seed(0)
    layer = nn.Linear(5, 3, bias=bias).double()
    x = torch.randn(shape, dtype=torch.float64)
    target = torch.randn(*shape[:-1], 3, dtype=torch.float64)
    config = EngineConfig(gram=True, route=route)
    assert_matches_reference(layer, lambda: squared_error(layer(x), target), config, reduction)


def test_linear_reused_sums_uses_before_norm():
    torch.manual_seed(1)
    layer = nn.Linear(4, 4).double()
    x = torch.randn(3, 2, 4, dtype=torch.float64)

    def loss():
        return squared_error(layer(torch.tanh(layer(x))), x)

    for route in ("ghost", "materialize"):
        assert_matches_reference(layer, loss, EngineConfig(gram=True, route=route))


def _weight_dot_routes(model, loss):
    _, engine = engine_stats(model, loss, EngineConfig(route="ghost"))
    assert not engine.failures, engine.failures
    return engine.weight_dot_routes


def test_weight_dot_is_read_from_the_output():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(5, 4), nn.GELU(), nn.Linear(4, 3, bias=False)).double()
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    target = torch.randn(4, 3, 3, dtype=torch.float64)

    def loss():
        return squared_error(model(x), target)

    assert _weight_dot_routes(model, loss) == {"0.weight": "output", "0.bias": "dense",
                                               "2.weight": "output"}
    assert_matches_reference(model, loss, EngineConfig(gram=True, route="ghost"))


def test_weight_dot_falls_back_after_an_in_place_activation():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(inplace=True), nn.Linear(4, 3)).double()
    x = torch.randn(6, 5, dtype=torch.float64)  # [B, d]: a 3-D input makes y a view (below)
    target = torch.randn(6, 3, dtype=torch.float64)

    def loss():
        return squared_error(model(x), target)

    routes = _weight_dot_routes(model, loss)
    assert routes["0.weight"] == "einsum"  # ReLU rewrote the output: W a_it recomputed
    assert routes["2.weight"] == "output"
    assert_matches_reference(model, loss, EngineConfig(gram=True, route="ghost"))


def test_weight_dot_of_a_reused_layer_sums_the_outputs_of_its_uses():
    torch.manual_seed(4)
    layer = nn.Linear(4, 4).double()
    x = torch.randn(3, 4, dtype=torch.float64)

    def loss():
        return squared_error(torch.relu_(layer(torch.tanh(layer(x)))), x)

    assert _weight_dot_routes(layer, loss)["weight"] == "mixed"  # second use edited in place
    assert_matches_reference(layer, loss, EngineConfig(gram=True, route="ghost"))


def test_output_view_modified_in_place_is_a_failure_not_zeros():
    """A Linear on [B, T, d] returns a view; an in-place op on it drops the tensor hook
    (torch), so its gradient never arrives: the layer is reported failed, never as zeros."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(inplace=True), nn.Linear(4, 3)).double()
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    target = torch.randn(4, 3, 3, dtype=torch.float64)
    stats, engine = engine_stats(model, lambda: squared_error(model(x), target), EngineConfig())
    assert list(stats) == ["2"]
    assert [name for name, _ in engine.failures] == ["0"]
