"""Engine behaviour: never raising, skipping, discarding, suspending, leaving models alone."""

import io

import torch
from torch import nn

from gradscope.record import kernels
from gradscope.record.engine import EngineConfig, PerSampleEngine

from .models import TinyGPT, lm_loss
from .reference import engine_stats, recording


def _broken(module, inputs, backprops):
    raise IndexError("boom\nsecond line")


def test_kernel_failure_is_recorded_and_disables_the_layer(monkeypatch):
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)).double()
    table = kernels.default_table()
    table[nn.LayerNorm] = ("norm-affine", _broken)
    monkeypatch.setattr(kernels, "default_table", lambda: table)
    x = torch.randn(4, 3, dtype=torch.float64)
    engine = PerSampleEngine(EngineConfig())
    for _ in range(2):
        with recording(engine, model):
            model(x).pow(2).sum().backward()
        stats = engine.collect(1.0)
    assert list(stats) == ["0"]
    assert engine.failures == [("1", "IndexError: boom")]  # once: disabled afterwards


def test_tied_weight_with_a_disabled_user_is_not_reported_wrong(monkeypatch):
    model = TinyGPT().double()
    table = kernels.default_table()
    table[nn.Linear] = ("factored", _broken)
    monkeypatch.setattr(kernels, "default_table", lambda: table)
    ids = torch.randint(0, 11, (2, 6))
    engine = PerSampleEngine(EngineConfig())
    for _ in range(2):
        with recording(engine, model):
            lm_loss(model, ids).sum().backward()
        stats = engine.collect(1.0)
    assert "wte" not in stats and "wpe" in stats  # head (disabled) shares wte.weight
    assert "shared" in engine.skipped["wte"]


def test_modules_disagreeing_on_the_batch_size_drop_the_step():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)

        def forward(self, x):
            return self.a(x).sum() + self.b(x[:2]).sum()

    model = Odd().double()
    x = torch.randn(4, 3, dtype=torch.float64)
    stats, engine = engine_stats(model, lambda: model(x).reshape(1), EngineConfig())
    assert stats == {}  # 4 rows in a, 2 in b: which are "the samples" is ambiguous
    reasons = engine.ledger.evidence("a").reasons
    assert any("disagree on the batch size: 4 (a), 2 (b)" in r for r in reasons), reasons


def test_discard_suspend_and_pickling_leave_no_trace():
    model = TinyGPT().double()
    ids = torch.randint(0, 11, (2, 6))
    before = io.BytesIO()
    torch.save(model, before)
    engine = PerSampleEngine(EngineConfig(gram=True))
    with recording(engine, model):
        lm_loss(model, ids).sum()
        engine.discard()
        loss = lm_loss(model, ids).sum()
        engine.suspended = True
        loss.backward(retain_graph=True)  # a task backward: ignored
        engine.suspended = False
        model.zero_grad()
        loss.backward()
    stats = engine.collect(torch.tensor(1.0, dtype=torch.float64))
    after = io.BytesIO()
    model.zero_grad(set_to_none=True)
    torch.save(model, after)
    assert before.getvalue() == after.getvalue()
    assert stats["wte"].gram.shape == (2, 2) and not engine.failures
    assert engine.collect(1.0) == {}  # cleared


def test_unused_output_gives_zero_statistics():
    model = nn.ModuleDict({"used": nn.Linear(3, 2), "unused": nn.Linear(3, 2)}).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    stats, engine = engine_stats(
        model, lambda: (model["used"](x) + 0 * model["unused"](x).detach()).sum(1), EngineConfig()
    )
    assert torch.equal(stats["unused"].norm2, torch.zeros(4, dtype=torch.float64))
    assert stats["used"].norm2.shape == (4,)


def test_position_embedding_shared_by_the_batch_is_skipped():
    class Positions(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(7, 3), nn.Embedding(5, 3)

        def forward(self, ids):
            return self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))  # (T,) broadcast

    model = Positions().double()
    ids = torch.randint(0, 7, (2, 4))
    stats, engine = engine_stats(model, lambda: model(ids).pow(2).sum((1, 2)), EngineConfig())
    assert list(stats) == ["wte"] and "shared by the whole batch" in engine.skipped["wpe"]
