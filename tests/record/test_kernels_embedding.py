"""Embedding kernel (row ids, never one-hot), alone and tied to an output Linear."""

import pytest
import torch
from torch import nn

from gradscope.record.engine import EngineConfig, PerSampleEngine

from .models import squared_error
from .reference import assert_matches_reference

IDS = torch.tensor([[1, 1, 3, 0, 1], [2, 2, 2, 2, 4], [0, 5, 0, 5, 3]])  # repeats, pads


@pytest.mark.parametrize("padding_idx", [None, 0])
@pytest.mark.parametrize("route", ["ghost", "materialize"])
def test_embedding_matches_reference(padding_idx, route):
    torch.manual_seed(0)
    layer = nn.Embedding(6, 4, padding_idx=padding_idx).double()
    target = torch.randn(3, 5, 4, dtype=torch.float64)
    config = EngineConfig(gram=True, route=route)
    assert_matches_reference(layer, lambda: squared_error(layer(IDS), target), config)


class Tied(nn.Module):
    def __init__(self, padding_idx):
        super().__init__()
        self.embed = nn.Embedding(6, 4, padding_idx=padding_idx)
        self.mid = nn.Linear(4, 4)
        self.head = nn.Linear(4, 6)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(torch.tanh(self.mid(self.embed(ids))))


@pytest.mark.parametrize("padding_idx", [None, 0])
@pytest.mark.parametrize("route", ["ghost", "materialize", "auto"])
def test_tied_embedding_and_head_sum_uses(padding_idx, route):
    torch.manual_seed(1)
    model = Tied(padding_idx).double()
    target = torch.randn(3, 5, 6, dtype=torch.float64)
    config = EngineConfig(gram=True, route=route)
    stats = assert_matches_reference(model, lambda: squared_error(model(IDS), target), config)
    assert list(stats) == ["embed", "mid", "head"]  # head keeps only its bias


def test_scale_grad_by_freq_is_not_covered():
    coverage = PerSampleEngine(EngineConfig()).coverage(nn.Embedding(5, 3, scale_grad_by_freq=True))
    assert not coverage.covered and "couples samples" in coverage.reason
