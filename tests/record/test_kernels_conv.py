"""Conv1d/2d/3d kernel (unfolded patches) against the per-sample autograd loop."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from gradscope.record.engine import EngineConfig

from .models import squared_error
from .reference import assert_matches_reference, engine_stats

CASES = [
    # (conv class, spatial input size, keyword arguments)
    (nn.Conv1d, (9,), dict(kernel_size=3)),
    (nn.Conv1d, (9,), dict(kernel_size=3, stride=2, padding=2, dilation=2, groups=2)),
    (nn.Conv1d, (8,), dict(kernel_size=4, padding="same", padding_mode="circular")),
    (nn.Conv2d, (6, 5), dict(kernel_size=3, stride=(2, 1), padding=1)),
    (nn.Conv2d, (7, 7), dict(kernel_size=(3, 2), dilation=(2, 1), groups=2, bias=False)),
    (nn.Conv2d, (5, 5), dict(kernel_size=3, padding=1, padding_mode="reflect")),
    (nn.Conv2d, (6, 6), dict(kernel_size=3, padding="same", groups=4)),
    (nn.Conv3d, (4, 5, 4), dict(kernel_size=2, stride=(1, 2, 1), padding=1, groups=2)),
]


@pytest.mark.parametrize("conv_class,size,kwargs", CASES)
@pytest.mark.parametrize("route", ["ghost", "materialize"])
def test_conv_matches_reference(conv_class, size, kwargs, route):
    torch.manual_seed(0)
    layer = conv_class(4, 4, **kwargs).double()
    x = torch.randn(3, 4, *size, dtype=torch.float64)
    target = torch.randn_like(layer(x))
    config = EngineConfig(gram=True, route=route)
    assert_matches_reference(layer, lambda: squared_error(layer(x), target), config)


@settings(max_examples=12, deadline=None)
@given(
    groups=st.sampled_from([1, 2]),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    padding=st.integers(0, 2),
    dilation=st.integers(1, 2),
    length=st.integers(6, 9),
    route=st.sampled_from(["ghost", "materialize"]),
)
def test_conv2d_generated_shapes(groups, kernel, stride, padding, dilation, length, route):
    torch.manual_seed(0)
    layer = nn.Conv2d(2, 4, kernel, stride, padding, dilation, groups).double()
    x = torch.randn(2, 2, length, length - 1, dtype=torch.float64)
    target = torch.randn_like(layer(x))
    config = EngineConfig(gram=True, route=route)
    assert_matches_reference(layer, lambda: squared_error(layer(x), target), config)


@pytest.mark.parametrize("conv_class,size,kwargs", CASES)
def test_conv_weight_dot_is_read_from_the_output(conv_class, size, kwargs):
    torch.manual_seed(1)
    layer = conv_class(4, 4, **kwargs).double()
    x = torch.randn(3, 4, *size, dtype=torch.float64)
    target = torch.randn_like(layer(x))

    def loss():
        return squared_error(layer(x), target)

    _, engine = engine_stats(layer, loss, EngineConfig(route="ghost"))
    assert engine.weight_dot_routes["weight"] == "output"
    assert_matches_reference(layer, loss, EngineConfig(route="ghost"))
