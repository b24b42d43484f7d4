"""LayerNorm / RMSNorm / GroupNorm affine kernels; BatchNorm coverage."""

import pytest
import torch
from torch import nn

from gradscope.record.engine import BATCHNORM_TRAIN, EngineConfig, PerSampleEngine

from .models import squared_error
from .reference import assert_matches_reference, engine_stats

CASES = [
    (lambda: nn.LayerNorm(6), (3, 6)),
    (lambda: nn.LayerNorm((4, 6)), (3, 5, 4, 6)),
    (lambda: nn.LayerNorm(6, bias=False), (3, 4, 6)),
    (lambda: nn.RMSNorm(6), (3, 4, 6)),
    (lambda: nn.RMSNorm((2, 6), eps=1e-3), (3, 2, 6)),
    (lambda: nn.GroupNorm(2, 4), (3, 4, 5)),
    (lambda: nn.GroupNorm(2, 4), (3, 4, 3, 2)),
]


@pytest.mark.parametrize("make,shape", CASES)
def test_norm_matches_reference(make, shape):
    torch.manual_seed(0)
    layer = make().double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    x = torch.randn(shape, dtype=torch.float64) * 2 + 1
    target = torch.randn(shape, dtype=torch.float64)
    assert_matches_reference(layer, lambda: squared_error(layer(x) ** 2, target))
    engine = PerSampleEngine(EngineConfig())
    assert engine.coverage(layer).method == "norm-affine"


def test_batchnorm_train_is_not_covered_and_skipped():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    stats, engine = engine_stats(model, lambda: model(x).pow(2).sum(1), EngineConfig())
    coverage = engine.coverage(model[1])
    assert (coverage.method, coverage.covered, coverage.reason) == ("none", False, BATCHNORM_TRAIN)
    # layer 0 ran before the BatchNorm: its output gradients mix samples, so it has no rows
    assert list(stats) == ["2"] and engine.skipped["1"] == BATCHNORM_TRAIN
    assert not engine.failures


def test_batchnorm_eval_uses_fallback():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()
    model(torch.randn(8, 3, dtype=torch.float64))  # some running statistics
    model.eval()
    assert PerSampleEngine(EngineConfig()).coverage(model[1]).method == "fallback"
    x = torch.randn(5, 3, dtype=torch.float64)
    assert_matches_reference(model, lambda: model(x).pow(2).sum(1))
