"""Per-sample losses read from the loss graph only where exact, and per-sample norm2 /
weight_dot over a layer's weight alone (GWA's head score), against per-sample autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradscope.record.recorder import Recorder
from gradscope.record.sample_loss import graph_losses
from gradscope.store.reader import open_run

LOGITS = torch.randn(6, 4, requires_grad=True)
TARGET = torch.tensor([0, 3, 1, -100, 2, 2])
REAL = torch.randn(6, 3, requires_grad=True)
GOAL = torch.randn(6, 3)


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: F.cross_entropy(LOGITS, TARGET) / 4,  # the ignored sample: NaN, not 0 ("learned")
         lambda: F.cross_entropy(LOGITS, TARGET, reduction="none").where(TARGET != -100, torch.nan)),
        (lambda: nn.CrossEntropyLoss(weight=torch.rand(4))(LOGITS, TARGET.clamp(min=0)), None),
        (lambda: F.cross_entropy(LOGITS, TARGET, reduction="none").sum(),
         lambda: F.cross_entropy(LOGITS, TARGET, reduction="none").where(TARGET != -100, torch.nan)),
        (lambda: F.mse_loss(REAL, GOAL), lambda: F.mse_loss(REAL, GOAL, reduction="none").mean(1)),
        (lambda: 2 * F.smooth_l1_loss(REAL, GOAL, beta=0.5),
         lambda: F.smooth_l1_loss(REAL, GOAL, beta=0.5, reduction="none").mean(1)),
        (lambda: F.binary_cross_entropy_with_logits(REAL, GOAL.sigmoid()),
         lambda: F.binary_cross_entropy_with_logits(REAL, GOAL.sigmoid(), reduction="none").mean(1)),
    ],
    ids=["ce-ignore-index-over-4", "ce-class-weights", "none-sum", "mse", "smooth-l1", "bce-logits"],
)
def test_losses_read_from_the_graph_equal_reduction_none(make, expected):
    loss = make()
    if expected is None:  # class weights: reduction="none" weights each sample's loss
        node = loss.grad_fn
        expected = lambda: F.cross_entropy(LOGITS, TARGET.clamp(min=0), weight=node._saved_weight,  # noqa: E731
                                           reduction="none")
    # equal values; the mean over a sample's elements is taken in float64 here
    torch.testing.assert_close(graph_losses(loss), expected().detach().double(), rtol=1e-6, atol=0,
                               equal_nan=True)


@pytest.mark.parametrize(
    "make",
    [
        lambda: F.cross_entropy(LOGITS, TARGET, label_smoothing=0.1),  # an Add of two terms
        lambda: F.cross_entropy(LOGITS, TARGET) + 0.01 * LOGITS.pow(2).sum(),  # a regulariser
        lambda: (F.cross_entropy(LOGITS, TARGET, reduction="none") * torch.rand(6)).mean(),  # a mask
        lambda: F.mse_loss(REAL, GOAL, reduction="none").mean(0).sum(),  # a mean over some dims
    ],
    ids=["label-smoothing", "regulariser", "weighted-mean", "partial-mean"],
)
def test_no_loss_is_read_where_it_is_not_exact(make):
    assert graph_losses(make()) is None


def test_head_weight_alone_per_sample_norm_and_dot(tmp_path):
    """norm2_w / weight_dot_w of the head equal ||c_i||^2 and <c_i, W> over its weight
    alone, c_i = grad_W of the batch mean loss from sample i (the bias left out)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(7, 5), torch.randint(0, 3, (7,))
    head = model[2]
    expected = []
    for i in range(7):
        grad = torch.autograd.grad(F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]) / 7, head.weight)[0]
        expected.append((float(grad.pow(2).sum()), float((grad * head.weight.detach()).sum())))
    with Recorder(model, optimizer, run_dir=tmp_path / "run"):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    samples = open_run(tmp_path / "run").table("samples")
    rows = samples[samples["layer"] == "2"].sort_values("sample")
    np.testing.assert_allclose(rows["norm2_w"], [e[0] for e in expected], rtol=1e-4)
    np.testing.assert_allclose(rows["weight_dot_w"], [e[1] for e in expected], rtol=1e-4, atol=1e-9)
    assert (rows["norm2"] > rows["norm2_w"]).all()  # the all-parameter value includes the bias
