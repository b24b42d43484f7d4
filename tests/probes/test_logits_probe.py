"""Output-logit probes on known logits: log Z, gaps, softmax collapse at the float32 limit."""

import math

import pytest
import torch

from gradscope.record.probes.logits import logit_stats, nlm_cos, rows_of


def test_log_z_gap_and_collapse_on_known_logits():
    z = torch.tensor([[0.0, 0.0, 0.0], [2.0, 1.0, 0.0], [20.0, 0.0, 0.0], [120.0, 0.0, 0.0]])
    stats = {k: float(v) for k, v in logit_stats(z).items()}
    log_z = [math.log(3), math.log(math.exp(2) + math.exp(1) + 1), 20 + math.log1p(2 * math.exp(-20)),
             120.0]
    assert stats["log_z_sum"] == pytest.approx(sum(log_z), rel=1e-6)
    assert stats["log_z_max"] == pytest.approx(120.0)
    assert stats["max_logit"] == 120.0
    assert stats["gap_sum"] == pytest.approx(0 + 1 + 20 + 120)
    assert stats["gap_min"] == 0.0
    # gap 120 is past float32's limit (exp(-120) underflows below the smallest subnormal):
    # exactly one-hot. Gap 20: the top probability rounds to 1, the others do not vanish.
    assert stats["collapsed"] == 1 and stats["saturated"] == 2 and stats["rows"] == 4


def test_collapse_depends_on_the_training_dtype():
    z = torch.tensor([[20.0, 0.0], [120.0, 0.0], [800.0, 0.0]])
    wide = {k: float(v) for k, v in logit_stats(z.double()).items()}
    # float64: gap 20 keeps its top probability below 1; only gap 800 (past ~745) is one-hot
    assert wide["saturated"] == 2 and wide["collapsed"] == 1
    # float16 underflows below ~6e-8 (gap ~16.6): all three; bfloat16 has float32's range
    assert float(logit_stats(z, torch.float16)["collapsed"]) == 3
    assert float(logit_stats(z, torch.bfloat16)["collapsed"]) == 2


def test_rows_drop_ignored_targets_and_put_classes_last():
    logits = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)  # [N, C, d]
    target = torch.tensor([[0, -100, 1, 2], [1, 1, -100, 0]])
    rows = rows_of(logits, target)
    assert rows.shape == (6, 3)
    assert torch.equal(rows[0], logits[0, :, 0])


def test_nlm_cos_reads_the_gradient_against_the_weights():
    weight = torch.nn.Parameter(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    weight.grad = -2 * weight.detach()
    assert float(nlm_cos(weight)) == pytest.approx(1.0)
    weight.grad = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    assert float(nlm_cos(weight)) == pytest.approx(-1 / math.sqrt(30))


def test_rows_beyond_the_budget_are_evenly_spaced(monkeypatch):
    from gradscope.record.probes import logits

    monkeypatch.setattr(logits, "BUDGET", 40)
    rows = rows_of(torch.arange(100, dtype=torch.float32).reshape(25, 4))  # 25 rows, budget 10
    assert rows.shape == (10, 4) and rows[0, 0] == 0 and rows[-1, 0] == 96
