"""torch.func fallback: a custom module with a nonlinear direct parameter, RNNs."""

import torch
from torch import nn

from gradscope.record.engine import EngineConfig, PerSampleEngine

from .models import Gated, squared_error
from .reference import assert_matches_reference


def test_custom_module_with_nonlinear_parameter():
    torch.manual_seed(0)
    model = Gated(4).double()
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    target = torch.randn(3, 2, 4, dtype=torch.float64)
    assert PerSampleEngine(EngineConfig()).coverage(model).method == "fallback"
    stats = assert_matches_reference(model, lambda: squared_error(model(x), target))
    assert set(stats) == {"", "inner"}


def test_lstm_without_vmap_rule_loops_over_samples():
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 4, num_layers=2).double()  # (T, B, D): batch at dim 1
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    h0 = torch.randn(2, 3, 4, dtype=torch.float64)
    c0 = torch.randn(2, 3, 4, dtype=torch.float64)

    def loss():
        out, (h, c) = lstm(x, (h0, c0))
        return out.pow(2).sum((0, 2)) + h.sum((0, 2)) + c.pow(2).sum((0, 2))

    assert_matches_reference(lstm, loss)


def test_gru_cell_in_a_loop_sums_uses():
    torch.manual_seed(0)
    cell = nn.GRUCell(3, 4).double()
    x = torch.randn(4, 3, 3, dtype=torch.float64)  # (B, T, D)

    def loss():
        h = torch.zeros(4, 4, dtype=torch.float64)
        for t in range(3):
            h = cell(x[:, t], h)
        return h.pow(2).sum(1)

    assert_matches_reference(cell, loss)


def test_parameter_shared_by_a_factored_and_a_fallback_use_is_summed_densely():
    torch.manual_seed(2)
    lin = nn.Linear(4, 4)
    gated = Gated(4)
    gated.mix = lin.weight  # one Parameter: a Linear use (factored) and a fallback use
    model = nn.Sequential(lin, gated).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    stats = assert_matches_reference(model, lambda: model(x).pow(2).sum(1))
    assert set(stats) == {"0", "1", "1.inner"}
