"""Training code as people write it, at the engine level: per-sample values equal a naive
one-sample-at-a-time loop, or the layer/step is reported not covered with its reason."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from gradscope.record.engine import (
    DOUBLE_BACKWARD,
    NO_OUTPUT,
    SEVERAL_PASSES,
    EngineConfig,
    PerSampleEngine,
)

from .reference import recording, reference_layer_stats


def _assert_close(stats, expected, rtol=1e-5):
    assert set(stats) == set(expected), (list(stats), list(expected))
    for layer, want in expected.items():
        for key in ("norm2", "weight_dot"):
            value = want[key]
            torch.testing.assert_close(
                getattr(stats[layer], key), value, rtol=rtol, atol=rtol * (value.abs().max().item() + 1e-30)
            )


class Checkpointed(nn.Module):
    """An MLP whose middle block runs under torch.utils.checkpoint (as in HF/nanoGPT)."""

    def __init__(self, reentrant: bool | None) -> None:
        super().__init__()
        self.stem = nn.Linear(5, 8)
        self.block = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.LayerNorm(8), nn.Linear(8, 8))
        self.head = nn.Linear(8, 3)
        self.reentrant = reentrant  # None: no checkpointing (the reference)

    def forward(self, x):
        h = torch.tanh(self.stem(x))
        if self.reentrant is None:
            h = self.block(h)
        else:
            h = checkpoint(self.block, h, use_reentrant=self.reentrant)
        return self.head(h)


def _checkpoint_case(reentrant: bool, nested_collect: bool, monkeypatch):
    torch.manual_seed(0)
    model = Checkpointed(reentrant).double()
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.randint(0, 3, (6,))
    engine = PerSampleEngine(EngineConfig())
    collected = []
    if nested_collect:  # today's recorder: every torch.autograd.backward call ends in collect
        original = torch.autograd.backward

        def backward(*args, **kwargs):
            original(*args, **kwargs)
            collected.append(engine.collect(6.0, step=0))

        monkeypatch.setattr(torch.autograd, "backward", backward)
    with recording(engine, model):
        F.cross_entropy(model(x), y).backward()
    monkeypatch.undo()
    if nested_collect:  # the nested backward's collect is deferred to the outer one
        assert len(collected) == 2 and collected[0] == {}
        stats = collected[1]
    else:
        stats = engine.collect(6.0, step=0)
    model.zero_grad()
    model.reentrant = None
    expected = reference_layer_stats(model, lambda: F.cross_entropy(model(x), y, reduction="none"), engine)
    _assert_close(stats, expected)
    assert not engine.failures


def test_checkpoint_reentrant_matches_the_naive_loop(monkeypatch):
    _checkpoint_case(reentrant=True, nested_collect=False, monkeypatch=monkeypatch)
    _checkpoint_case(reentrant=True, nested_collect=True, monkeypatch=monkeypatch)


def test_checkpoint_non_reentrant_matches_the_naive_loop(monkeypatch):
    _checkpoint_case(reentrant=False, nested_collect=False, monkeypatch=monkeypatch)


def _mlp():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def test_gradient_penalty_step_is_not_covered():
    model = _mlp()
    x, y = torch.randn(5, 4, dtype=torch.float64, requires_grad=True), torch.randint(0, 3, (5,))
    engine = PerSampleEngine(EngineConfig())
    with recording(engine, model):
        out = model(x)
        grad = torch.autograd.grad(out.sum(), x, create_graph=True)[0]
        loss = F.cross_entropy(out, y) + 0.1 * ((grad.norm(2, dim=1) - 1) ** 2).mean()
        loss.backward()
    assert engine.collect(5.0, step=3) == {}
    for layer in ("0", "2"):
        assert engine.ledger.evidence(layer).reasons == {DOUBLE_BACKWARD: 1}
    with recording(engine, model):  # the next plain step is covered again
        F.cross_entropy(model(x), y).backward()
    assert set(engine.collect(5.0, step=4)) == {"0", "2"}


def test_autograd_grad_before_backward_is_never_mixed_in():
    model = _mlp()
    x, y = torch.randn(5, 4, dtype=torch.float64, requires_grad=True), torch.randint(0, 3, (5,))
    engine = PerSampleEngine(EngineConfig())
    with recording(engine, model):
        out = model(x)
        torch.autograd.grad(out.sum(), x, retain_graph=True)  # a saliency map, say
        F.cross_entropy(out, y).backward()
    assert engine.collect(5.0, step=0) == {}
    assert engine.ledger.evidence("0").reasons == {SEVERAL_PASSES: 1}


def test_several_backward_passes_on_a_retained_graph_drop_the_step():
    model = _mlp()
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.randint(0, 3, (5,))
    engine = PerSampleEngine(EngineConfig())
    with recording(engine, model):  # manual PCGrad
        out = model(x)
        l1, l2 = F.cross_entropy(out, y), out.pow(2).mean()
        l1.backward(retain_graph=True)
        first = engine.collect(5.0, step=7)
        l2.backward()
        second = engine.collect(5.0, step=7)
    assert set(first) == {"0", "2"} and second == {}
    assert engine.take_step_drop() == SEVERAL_PASSES and engine.take_step_drop() is None
    evidence = engine.ledger.evidence("2")
    assert evidence.rows_steps == 0 and evidence.reasons == {SEVERAL_PASSES: 1}


def test_a_second_pass_after_the_backward_does_not_drop_the_next_step():
    model = _mlp()
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.randint(0, 3, (5,))
    engine = PerSampleEngine(EngineConfig())
    with recording(engine, model):
        out = model(x)
        F.cross_entropy(out, y).backward(retain_graph=True)
        engine.collect(5.0, step=0)
        torch.autograd.grad(out.pow(2).mean(), list(model.parameters()))  # e.g. a logged gradient
        assert engine.take_step_drop() == SEVERAL_PASSES
        F.cross_entropy(model(x), y).backward()
        assert set(engine.collect(5.0, step=1)) == {"0", "2"}


def test_gan_generator_reused_after_critic_backward_is_not_a_second_pass():
    torch.manual_seed(2)
    gen, critic = nn.Linear(3, 2).double(), nn.Linear(2, 1).double()
    engine = PerSampleEngine(EngineConfig())
    model = nn.ModuleDict({"gen": gen, "critic": critic})
    with recording(engine, model):
        fake = gen(torch.randn(4, 3, dtype=torch.float64))
        critic(fake.detach()).mean().backward()
        engine.collect(4.0, step=0)
        (-critic(fake).mean()).backward()
        engine.collect(4.0, step=1)
    assert engine.take_step_drop() is None
    assert SEVERAL_PASSES not in engine.ledger.evidence("critic").reasons


class Bags(nn.Module):
    """Multiple-instance learning: instances encoded one by one, pooled per bag."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(4, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, instances, bag_of):
        h = torch.relu(self.encoder(instances))  # [instances, 6]
        pooled = torch.zeros(int(bag_of.max()) + 1, 6, dtype=h.dtype).index_add(0, bag_of, h)
        return self.head(pooled)  # [bags, 2]


def test_multiple_instance_batch_disagreement_drops_the_step():
    model = Bags().double()
    instances = torch.randn(13, 4, dtype=torch.float64)
    bag_of = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4, 4])
    engine = PerSampleEngine(EngineConfig())
    with recording(engine, model):
        F.cross_entropy(model(instances, bag_of), torch.tensor([0, 1, 0, 1, 1])).backward()
    assert engine.collect(5.0, step=0) == {}
    reasons = engine.ledger.evidence("head").reasons
    assert list(reasons) == [
        "modules of one forward disagree on the batch size: 13 (encoder), 5 (head); per-sample "
        "values are ambiguous (per-instance values are not per-sample ones)"
    ]


class BagModel(nn.Module):
    def __init__(self, mode: str, padding_idx: int | None = None) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(10, 4, mode=mode, padding_idx=padding_idx)
        self.head = nn.Linear(4, 2)

    def forward(self, ids, offsets=None, weights=None):
        return self.head(self.bag(ids, offsets, per_sample_weights=weights))


def _bag_case(model, call, batch):
    engine = PerSampleEngine(EngineConfig())
    with recording(engine, model):
        call().pow(2).sum(1).mean().backward()
    stats = engine.collect(float(batch), step=0)
    model.zero_grad()
    assert not engine.failures
    _assert_close(stats, reference_layer_stats(model, lambda: call().pow(2).sum(1), engine))


def test_embedding_bag_with_offsets_is_exact_per_bag():
    torch.manual_seed(3)
    ids = torch.tensor([1, 2, 4, 5, 4, 3, 2, 9, 0, 0, 7])
    offsets = torch.tensor([0, 2, 2, 6, 9])  # 5 bags, one empty
    weights = torch.rand(11, dtype=torch.float64)
    for mode, padding in (("mean", None), ("sum", 0), ("mean", 4)):
        model = BagModel(mode, padding).double()
        _bag_case(model, lambda m=model: m(ids, offsets), 5)
    model = BagModel("sum").double()
    _bag_case(model, lambda: model(ids, offsets, weights), 5)
    model = BagModel("mean").double()
    _bag_case(model, lambda: model(ids[:10].reshape(5, 2)), 5)


def test_embedding_bag_max_is_not_covered_and_sets_no_batch():
    model = BagModel("max").double()
    engine = PerSampleEngine(EngineConfig())
    with recording(engine, model):
        model(torch.tensor([1, 2, 4, 5, 4, 3]), torch.tensor([0, 2, 3])).sum().backward()
    assert set(engine.collect(1.0, step=0)) == {"head"}
    assert "mode='max'" in next(iter(engine.ledger.evidence("bag").reasons))


def test_module_returning_no_tensor_is_not_covered():
    class Cache(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(3, 3)
            self.kept = None

        def forward(self, x):
            self.kept = self.proj.weight.sum() * x  # used later, invisible to output hooks

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.cache, self.head = Cache(), nn.Linear(3, 1)

    net = Net().double()
    engine = PerSampleEngine(EngineConfig())

    class Side(nn.Module):  # a direct parameter and a None return
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(3, dtype=torch.float64))

        def forward(self, x):
            return None

    side = Side()
    net.side = side
    with recording(engine, net):
        x = torch.randn(4, 3, dtype=torch.float64)
        net.side(x)
        net.head(x).sum().backward()
    assert set(engine.collect(1.0, step=0)) == {"head"}
    assert engine.ledger.evidence("side").reasons == {NO_OUTPUT: 1}
