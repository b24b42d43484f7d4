"""Modules gradscope must not touch: compiled regions and parametrized weights. Training is
bit-identical with the engine on, and such layers are named as the user names them and
reported not covered with their reason."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.module import register_module_forward_hook
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

from gradscope.record.engine import COMPILED, EngineConfig, PerSampleEngine
from gradscope.record.kernels.fallback import PARAMETRIZED
from gradscope.record.names import ModuleNames

from .reference import recording, reference_layer_stats


def _train(model, steps, engine=None, names=None, compiled=None):
    """SGD steps; with an engine, a global hook (as the recorder's) captures every call."""
    torch.manual_seed(5)
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    run = model if compiled is None else compiled
    collected, handles = [], []
    if engine is not None:
        def pre(module, args):
            if not torch.compiler.is_compiling():
                names.add_root(module)
                if "_orig_mod" in module._modules:
                    engine.mark_compiled(module, names)

        def hook(module, args, kwargs, output):
            if torch.compiler.is_compiling():
                return
            name = names.module(module)
            if name is not None and any(True for _ in module.parameters(recurse=False)):
                engine.capture(name, module, args, kwargs, output, step=step)

        handles = [torch.nn.modules.module.register_module_forward_pre_hook(pre),
                   register_module_forward_hook(hook, with_kwargs=True)]
    losses = []
    try:
        for step in range(steps):
            optimizer.zero_grad()
            loss = F.cross_entropy(run(x), y)
            loss.backward()
            if engine is not None:
                collected.append(engine.collect(8.0, step=step))
            optimizer.step()
            losses.append(loss.item())
    finally:
        for handle in handles:
            handle.remove()
    return losses, collected, (x, y)


class Net(nn.Module):
    def __init__(self, wrap) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = wrap(nn.Linear(4, 6))
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.fc(x)))


def test_parametrized_weights_train_identically_and_are_not_covered():
    for wrap in (spectral_norm, weight_norm):
        plain, _, _ = _train(Net(wrap).double(), 3)
        model = Net(wrap).double()
        engine, names = PerSampleEngine(EngineConfig()), ModuleNames()
        recorded, collected, (x, y) = _train(model, 3, engine, names)
        assert recorded == plain  # bit-identical: spectral_norm's power iteration untouched
        assert all(set(stats) == {"head"} for stats in collected)
        assert engine.ledger.evidence("fc").reasons == {PARAMETRIZED: 3}
        originals = dict(model.fc.parametrizations.weight.named_parameters())  # original / original0, 1
        for attr, param in originals.items():
            assert names.param(param) == ("fc", f"fc.parametrizations.weight.{attr}")
        table = engine.ledger.layer_table(names.layer_table(engine.coverage))
        assert [(e["name"], e["covered"]) for e in table] == [("fc", False), ("head", True)]
        assert [p["name"] for p in table[0]["params"]] == [
            "bias", *(f"parametrizations.weight.{attr}" for attr in originals)
        ]
        _assert_head_exact(model, x, y)


def _assert_head_exact(model, x, y):
    """The covered layer next to a parametrized one is exact (eval: no power iteration)."""
    model.eval()
    engine = PerSampleEngine(EngineConfig())
    with recording(engine, model):
        F.cross_entropy(model(x), y).backward()
    stats = engine.collect(8.0, step=0)
    model.zero_grad()
    expected = reference_layer_stats(model, lambda: F.cross_entropy(model(x), y, reduction="none"), engine)
    for key in ("norm2", "weight_dot"):
        torch.testing.assert_close(getattr(stats["head"], key), expected["head"][key], rtol=1e-5, atol=1e-12)


def test_torch_compile_trains_identically_and_is_not_covered():
    torch._dynamo.reset()
    plain, _, _ = _train(Net(lambda m: m).double(), 3)
    model = Net(lambda m: m).double()
    compiled = torch.compile(model, backend="eager")
    engine, names = PerSampleEngine(EngineConfig()), ModuleNames()
    recorded, collected, _ = _train(model, 3, engine, names, compiled=compiled)
    assert recorded == plain and collected == [{}, {}, {}]
    assert names.module(model.fc) == "fc" and names.module(compiled) == ""
    table = engine.ledger.layer_table(names.layer_table(engine.coverage))
    assert [(e["name"], e["covered"], e["reason"]) for e in table] == [
        ("fc", False, COMPILED), ("head", False, COMPILED)
    ]
    assert table[0]["reasons"] == {COMPILED: 3}


def test_capture_inside_a_compiled_region_is_a_no_op():
    torch._dynamo.reset()
    model = nn.Linear(3, 2).double()
    engine = PerSampleEngine(EngineConfig())

    def step(x):
        engine.capture("lin", model, (x,), {}, model(x))
        return model(x).sum()

    compiled = torch.compile(step, backend="eager")
    compiled(torch.randn(4, 3, dtype=torch.float64)).backward()
    assert engine.collect(1.0, step=0) == {} and not engine.failures


def test_a_root_takes_over_earlier_roots_it_contains():
    model = Net(spectral_norm)
    names = ModuleNames()
    assert not names.add_root(model.fc.parametrizations.weight)  # never a root
    assert names.add_root(model.head)  # ran on its own first
    assert names.module(model.head) == ""
    assert names.add_root(model)
    assert names.module(model.head) == "head" and names.module(model) == ""
    assert names.param(model.head.weight) == ("head", "head.weight")
    other = nn.Linear(2, 2)
    assert names.add_root(other) and names.module(other) == "Linear1"
    assert [r for r in names.roots()] == [model, other]
