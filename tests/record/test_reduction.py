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


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        ([torch.tensor(True), "read"], "read"),
        ([torch.tensor(False), "read"], "assumed"),
        (["declared", "declared"], "declared"),
        ([], ""),
    ],
)
def test_a_source_only_the_device_knows_is_resolved_off_the_training_thread(sources, expected):
    """On CUDA, whether nll_loss ignored a target is a device bool: read in the writer."""
    from gradscope.record.rows import StepRecord

    record = StepRecord(
        step=0, rank=0, optimizer=0, wall_time=0.0, step_time=0.0, recorder_time=0.0, backward_calls=1,
        skipped=False, recorded=True, hparams=[], per_sample_scale=8.0, per_sample_scale_source=sources,
    )
    row = record.start_copy()()["steps"]
    assert row["per_sample_scale_source"] == [expected] and row["per_sample_scale"] == [8.0]
