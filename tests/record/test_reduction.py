"""Reading the per-sample factor f (g_i = f c_i) and how it is known from a loss graph."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gradscope.record.reduction import detect_reduction, per_sample_factor

B = 8


def _logits():
    torch.manual_seed(0)
    return torch.randn(B, 4, requires_grad=True), torch.randint(0, 4, (B,))


def _factor(loss, forced="auto"):
    return per_sample_factor(detect_reduction(loss), B, forced)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda x, y: F.cross_entropy(x, y), (B, "read")),
        (lambda x, y: F.cross_entropy(x, y, reduction="sum"), (1, "read")),
        (lambda x, y: F.cross_entropy(x, y) / 4, (4 * B, "read")),  # gradient accumulation
        (lambda x, y: 0.5 * x.pow(2).mean(), (2 * B, "read")),
        (lambda x, y: F.mse_loss(x, torch.zeros_like(x)), (B, "read")),
        (lambda x, y: F.cross_entropy(x, y, ignore_index=y[0].item()), (B, "assumed")),
        (lambda x, y: F.cross_entropy(x, y, ignore_index=-100), (B, "read")),  # nothing ignored
        (lambda x, y: F.cross_entropy(x, y, weight=torch.ones(4)), (B, "assumed")),
        (lambda x, y: F.cross_entropy(x, y, label_smoothing=0.1), (B, "assumed")),
        (lambda x, y: 0.01 * x.pow(2).mean() + F.cross_entropy(x, y), (B, "assumed")),
        (lambda x, y: F.cross_entropy(x, y) + 0.01 * x.pow(2).mean(), (B, "assumed")),
        (lambda x, y: (F.cross_entropy(x, y) + x.pow(2).mean()) / 2, (2 * B, "assumed")),
        (lambda x, y: x.exp().prod(), (B, "assumed")),
    ],
)
def test_factor_and_source(make, expected):
    x, y = _logits()
    assert _factor(make(x, y)) == expected


def test_a_declared_reduction_wins():
    x, y = _logits()
    assert _factor(F.cross_entropy(x, y, label_smoothing=0.1), forced="sum") == (1, "declared")
