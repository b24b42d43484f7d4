"""nn.MultiheadAttention (torch.func over its direct params) and GPT-2 style Conv1D."""

import pytest
import torch
from torch import nn

from gradscope.record.engine import EngineConfig, PerSampleEngine

from .models import Conv1D, squared_error
from .reference import assert_matches_reference


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_self_attention(batch_first, need_weights):
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(6, 2, batch_first=batch_first).double()
    x = torch.randn(3, 4, 6, dtype=torch.float64)
    x = x if batch_first else x.transpose(0, 1)
    mask = torch.ones(4, 4, dtype=torch.bool).triu(1)

    def loss():
        out, weights = attn(x, x, x, attn_mask=mask, need_weights=need_weights)
        out = out if batch_first else out.transpose(0, 1)
        extra = weights.pow(2).flatten(1).sum(1) if need_weights else 0.0
        return out.pow(2).flatten(1).sum(1) + extra

    stats = assert_matches_reference(attn, loss)
    assert list(stats) == ["", "out_proj"]


def test_multihead_cross_attention_with_padding_mask():
    torch.manual_seed(1)
    attn = nn.MultiheadAttention(6, 3, kdim=4, vdim=5, batch_first=False).double()
    query = torch.randn(2, 3, 6, dtype=torch.float64)  # (T, B, E)
    key = torch.randn(4, 3, 4, dtype=torch.float64)
    value = torch.randn(4, 3, 5, dtype=torch.float64)
    padding = torch.tensor([[False] * 4, [False, False, True, True], [False, True, False, False]])

    def loss():
        out = attn(query, key, value, key_padding_mask=padding)[0]
        return out.pow(2).sum((0, 2))

    assert_matches_reference(attn, loss)


def test_attention_dropout_in_training_is_not_covered():
    engine = PerSampleEngine(EngineConfig())
    assert not engine.coverage(nn.MultiheadAttention(4, 2, dropout=0.1)).covered
    assert engine.coverage(nn.MultiheadAttention(4, 2, dropout=0.1).eval()).covered


@pytest.mark.parametrize("route", ["ghost", "materialize"])
def test_gpt2_conv1d(route):
    torch.manual_seed(0)
    layer = Conv1D(nf=5, nx=4).double()
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    target = torch.randn(3, 2, 5, dtype=torch.float64)
    assert PerSampleEngine(EngineConfig()).coverage(layer).method == "ghost"
    config = EngineConfig(gram=True, route=route)
    assert_matches_reference(layer, lambda: squared_error(layer(x), target), config)
