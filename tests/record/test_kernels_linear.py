"""Linear kernel against the per-sample autograd loop."""

import pytest
import torch
from torch import nn

from gradscope.record.engine import EngineConfig

from .models import squared_error
from .reference import assert_matches_reference

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
