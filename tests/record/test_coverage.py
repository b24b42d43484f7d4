"""Coverage from evidence: the layer table says covered only where rows were recorded."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gradscope.record import kernels
from gradscope.record.coverage import UPSTREAM_OF_BATCHNORM, CoverageLedger
from gradscope.record.engine import BATCHNORM_TRAIN, EngineConfig, PerSampleEngine
from gradscope.record.names import ModuleNames

from .reference import recording


def _static(*names):
    return [{"name": n, "type": "Linear", "params": [], "numel": 0, "method": "ghost", "covered": True,
             "reason": ""} for n in names]


def test_ledger_counts_steps_once_and_retracts_the_latest():
    ledger = CoverageLedger()
    for step in (0, 0, 1, 2):  # two micro-batches at step 0
        ledger.rows(step, "a")
        ledger.missing(step, "b", "why")
    assert ledger.take_dirty() and not ledger.take_dirty()
    ledger.retract(2, "dropped")
    a, b = ledger.layer_table(_static("a", "b", "c"))[:2]
    assert (a["covered"], a["rows_steps"], a["first_step"], a["last_step"]) == (True, 2, 0, 1)
    assert a["reasons"] == {"dropped": 1} and a["reason"] == "" and a["method"] == "ghost"
    assert (b["covered"], b["reason"], b["reasons"], b["method"]) == (False, "why", {"why": 3}, "none")
    c = ledger.layer_table(_static("c"))[0]
    assert not c["covered"] and "never ran in a recorded backward" in c["reason"]


def test_final_eval_mode_does_not_hide_batchnorm_train():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()
    engine, names = PerSampleEngine(EngineConfig()), ModuleNames()
    names.add_root(model)
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.randint(0, 2, (6,))
    for step in range(2):
        with recording(engine, model):
            F.cross_entropy(model(x), y).backward()
        engine.collect(6.0, step=step)
    model.eval()  # a validation loop at the end
    with torch.no_grad(), recording(engine, model):
        model(x)
    table = engine.ledger.layer_table(names.layer_table(engine.coverage))
    bn = table[1]
    assert (bn["name"], bn["covered"], bn["reason"], bn["reasons"]) == (
        "1", False, BATCHNORM_TRAIN, {BATCHNORM_TRAIN: 2}
    )
    first, last = table[0], table[2]
    assert not first["covered"] and first["reasons"] == {UPSTREAM_OF_BATCHNORM: 2}
    assert last["covered"] and last["rows_steps"] == 2


def _broken(module, inputs, backprops):
    raise IndexError("boom")


def test_run_time_skips_and_failures_are_reasons(monkeypatch):
    table = kernels.default_table()
    table[nn.LayerNorm] = ("norm-affine", _broken)
    monkeypatch.setattr(kernels, "default_table", lambda: table)
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3), nn.Linear(3, 1)).double()
    model[2].weight = model[0].weight  # shared with a layer that then fails
    engine, names = PerSampleEngine(EngineConfig()), ModuleNames()
    names.add_root(model)
    for step in range(2):
        with recording(engine, model):
            model(torch.randn(4, 3, dtype=torch.float64)).sum().backward()
        engine.collect(1.0, step=step)
    reasons = {e["name"]: e["reasons"] for e in engine.ledger.layer_table(names.layer_table(engine.coverage))}
    assert reasons["1"] == {
        "kernel failed (IndexError: boom)": 1,
        "disabled after a kernel failure (IndexError: boom)": 1,
    }


def test_a_fallback_that_loops_over_samples_says_so():
    torch.manual_seed(0)
    model = nn.Sequential()
    model.rnn = nn.LSTM(3, 4, batch_first=True)
    model = model.double()
    engine = PerSampleEngine(EngineConfig())
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    with recording(engine, model):
        model.rnn(x)[0].pow(2).sum().backward()
    assert set(engine.collect(1.0, step=0)) == {"rnn"}
    methods = engine.ledger.evidence("rnn").methods
    assert all(m == "fallback" or m.startswith("fallback-loop (vmap failed: ") for m in methods), methods


def test_a_tied_head_is_covered_under_the_layer_that_reports_its_weight():
    from .models import TinyGPT, lm_loss

    model = TinyGPT().double()
    engine, names = PerSampleEngine(EngineConfig()), ModuleNames()
    names.add_root(model)
    with recording(engine, model):
        lm_loss(model, torch.randint(0, 11, (2, 6))).sum().backward()
    engine.collect(1.0, step=0)
    table = {e["name"]: e for e in engine.ledger.layer_table(names.layer_table(engine.coverage))}
    assert table["head"]["reported_under"] == "wte" and table["head"]["covered"]
    assert all(e["covered"] for e in table.values()), {n: e["reason"] for n, e in table.items()}
