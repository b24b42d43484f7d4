"""Whole models against the per-sample autograd loop, mean and sum reductions."""

import pytest
import torch

from gradscope.record.engine import EngineConfig

from .models import LSTMModel, SmallCNN, TinyGPT, lm_loss, mlp, squared_error
from .reference import assert_matches_reference


@pytest.mark.parametrize("attention", ["mha", "qkv"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_tiny_gpt_with_tied_head(attention, reduction):
    torch.manual_seed(0)
    model = TinyGPT(attention=attention).double()
    ids = torch.randint(0, 11, (3, 6))
    stats = assert_matches_reference(model, lambda: lm_loss(model, ids), reduction=reduction)
    assert "head" not in stats  # its only weight is wte's: reported under wte
    assert next(iter(stats)) == "wte"


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_small_cnn(reduction):
    torch.manual_seed(0)
    model = SmallCNN().double()
    x = torch.randn(3, 2, 6, 6, dtype=torch.float64)
    target = torch.randn(3, 3, dtype=torch.float64)
    assert_matches_reference(model, lambda: squared_error(model(x), target), reduction=reduction)


@pytest.mark.parametrize("route", ["auto", "ghost", "materialize"])
def test_mlp(route):
    torch.manual_seed(0)
    model = mlp().double()
    x = torch.randn(5, 6, dtype=torch.float64)
    target = torch.randn(5, 3, dtype=torch.float64)
    config = EngineConfig(gram=True, route=route)
    assert_matches_reference(model, lambda: squared_error(model(x), target), config, "sum")


@pytest.mark.parametrize("batch_first", [False, True])
def test_lstm_model(batch_first):
    torch.manual_seed(0)
    model = LSTMModel(batch_first).double()
    x = torch.randn(3, 4, 4, dtype=torch.float64)  # (B, T, D)
    x = x if batch_first else x.transpose(0, 1)
    target = torch.randn(3, 3, dtype=torch.float64)
    assert_matches_reference(model, lambda: squared_error(model(x), target))


def test_gpt_weight_dots_come_from_the_outputs():
    """Linear, GPT-2 Conv1D and the tied head (+ wte's row ids) read <g_i, W> from outputs."""
    from torch import nn

    from .models import Conv1D
    from .reference import engine_stats

    torch.manual_seed(0)
    model = TinyGPT(attention="qkv").double()
    model.block.fc = Conv1D(16, 8).double()
    ids = torch.randint(0, 11, (3, 6))
    _, engine = engine_stats(model, lambda: lm_loss(model, ids), EngineConfig(route="ghost"))
    routes = engine.weight_dot_routes
    assert routes["wte.weight"] == "output"  # head output; the embedding use has row ids
    for name in ("block.q", "block.proj", "block.fc", "block.out"):
        assert routes[f"{name}.weight"] == "output", (name, routes)
    assert isinstance(model.block.out, nn.Linear)
    assert_matches_reference(model, lambda: lm_loss(model, ids), EngineConfig(route="ghost"))


class BareParameters(torch.nn.Module):
    """Parameters on the root module itself: CLIP's 0-d logit_scale, ViT's pos_embedding."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 4)
        self.logit_scale = torch.nn.Parameter(torch.tensor(3.0))
        self.pos_embedding = torch.nn.Parameter(torch.randn(6))

    def forward(self, x):
        return self.fc(x + self.pos_embedding) * self.logit_scale


def test_bare_root_parameters_including_a_0d_one_are_covered_exactly():
    torch.manual_seed(0)
    model = BareParameters().double()
    x = torch.randn(5, 6, dtype=torch.float64)
    target = torch.randn(5, 4, dtype=torch.float64)
    stats = assert_matches_reference(model, lambda: squared_error(model(x), target))
    assert "" in stats  # the root's own parameters: a layer named ""
