"""Per-task gradients (gradscope.record.tasks): task Grams and per-sample cross-task dots,
each checked against separate autograd passes, plus the recorder's one-line API."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import gradscope
from gradscope.record.engine import EngineConfig, PerSampleEngine
from gradscope.record.tasks import TaskRecorder, task_stats
from gradscope.store.reader import open_run
from tests.record.models import SmallCNN, TinyGPT
from tests.record.reference import recording, reference_layers


@pytest.fixture(autouse=True)
def _float64():
    """float64 models, so the comparisons with separate passes are tight."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


class TwoHeads(nn.Module):
    """A shared tanh trunk and two scalar regression heads, a and b."""

    def __init__(self, d: int = 6, hidden: int = 8) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.head_a = nn.Linear(hidden, 1)
        self.head_b = nn.Linear(hidden, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.trunk(x)
        return self.head_a(features).squeeze(1), self.head_b(features).squeeze(1)


def _named(model: nn.Module) -> tuple[list[nn.Parameter], list[str]]:
    params = [p for p in model.parameters() if p.requires_grad]
    layer = {id(p): name.rpartition(".")[0] for name, p in model.named_parameters()}
    return params, [layer[id(p)] for p in params]


def _gram(stats, layer: str) -> Tensor:
    return stats.gram[stats.layers.index(layer)]


def _cos(gram: Tensor) -> float:
    return float(gram[0, 1] / (gram[0, 0] * gram[1, 1]).sqrt())


def _reference_grads(loss: Tensor, params: list[nn.Parameter]) -> list[Tensor]:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]


def _reference_task_gram(losses: list[Tensor], params: list[nn.Parameter]) -> Tensor:
    """G_ab = <g_a, g_b> from one separate backward pass per task."""
    flat = torch.stack([torch.cat([g.reshape(-1) for g in _reference_grads(x, params)]) for x in losses])
    return flat @ flat.t()


# ---------------------------------------------------------------- known answers


@pytest.mark.parametrize(("sign", "expected"), [(-1.0, -1.0), (1.0, 1.0)])
def test_opposite_and_agreeing_targets_on_a_shared_trunk(sign: float, expected: float) -> None:
    torch.manual_seed(0)
    model = TwoHeads()
    with torch.no_grad():  # identical heads: only the targets differ
        model.head_b.weight.copy_(model.head_a.weight)
        model.head_b.bias.copy_(model.head_a.bias)
    x, y = torch.randn(16, 6), 100 * torch.randn(16)  # targets far from the outputs
    out_a, out_b = model(x)
    losses = {"a": F.mse_loss(out_a, y), "b": F.mse_loss(out_b, sign * y)}
    stats = task_stats(losses, *_named(model))
    for layer in ("trunk.0", "trunk.2"):
        assert _cos(_gram(stats, layer)) == pytest.approx(expected, abs=0.02)


def test_orthogonal_tasks_read_disjoint_halves_of_the_trunk() -> None:
    torch.manual_seed(1)
    trunk = nn.Linear(6, 8)
    x = torch.randn(10, 6)
    features = trunk(x)
    losses = {"a": features[:, :4].pow(2).mean(), "b": features[:, 4:].sin().mean()}
    stats = task_stats(losses, list(trunk.parameters()), ["trunk", "trunk"])
    gram = _gram(stats, "trunk")
    assert gram[0, 1].abs() < 1e-12 and gram[0, 0] > 0 and gram[1, 1] > 0


def test_heads_show_zero_norm_for_the_other_task() -> None:
    torch.manual_seed(2)
    model = TwoHeads()
    out_a, out_b = model(torch.randn(8, 6))
    stats = task_stats({"a": out_a.pow(2).mean(), "b": out_b.mean()}, *_named(model))
    head_a, head_b = _gram(stats, "head_a"), _gram(stats, "head_b")
    assert head_a[0, 0] > 0 and head_a[1, 1] == 0 and head_a[0, 1] == 0
    assert head_b[1, 1] > 0 and head_b[0, 0] == 0 and head_b[0, 1] == 0


# ---------------------------------------------------------------- against separate passes


@pytest.mark.parametrize("mode", ["batched", "loop"])
def test_task_gram_equals_separate_backward_passes(mode: str) -> None:
    torch.manual_seed(3)
    model = SmallCNN()
    x = torch.randn(4, 2, 6, 6)
    logits = model(x)
    losses = [F.cross_entropy(logits, torch.tensor([0, 1, 2, 0])), logits[:, 1].exp().mean(), logits.std()]
    params, layers = _named(model)
    stats = task_stats(dict(zip("abc", losses)), params, layers, mode=mode)
    assert stats.names == ["a", "b", "c"] and stats.sample_gram is None
    for layer in stats.layers:
        chosen = [p for p, name in zip(params, layers) if name == layer]
        torch.testing.assert_close(_gram(stats, layer), _reference_task_gram(losses, chosen))


class _NoVmap(torch.autograd.Function):
    """Identity whose backward reads a value back (.item()), which vmap refuses."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad * (1.0 + 0.0 * grad.sum().item())


def test_falls_back_to_one_pass_per_task_when_vmap_raises() -> None:
    torch.manual_seed(4)
    layer = nn.Linear(5, 3)
    features = _NoVmap.apply(layer(torch.randn(6, 5)))
    losses = [features[:, 0].mean(), -features.sum()]
    with pytest.raises(RuntimeError):
        task_stats(dict(zip("ab", losses)), list(layer.parameters()), ["l", "l"], mode="batched")
    stats = task_stats(dict(zip("ab", losses)), list(layer.parameters()), ["l", "l"], mode="auto")
    torch.testing.assert_close(stats.gram[0], _reference_task_gram(losses, list(layer.parameters())))


# ---------------------------------------------------------------- per-sample cross-task dots


def _gpt_losses(model: nn.Module, ids: Tensor) -> dict[str, Tensor]:
    """Two per-sample losses on the same logits: next token, and the token two ahead."""
    logits = model(ids[:, :-2])  # (B, T, V)
    ahead = F.cross_entropy(logits.transpose(1, 2), ids[:, 2:], reduction="none").sum(1)
    nxt = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:-1], reduction="none").sum(1)
    return {"next": nxt, "ahead": ahead, "size": logits.pow(2).flatten(1).mean(1)}


def _cnn_losses(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    logits = model(x)
    return {"first": logits[:, 0] ** 2, "rest": -logits[:, 1:].sum(1)}


CASES = {
    "gpt": (lambda: TinyGPT(attention="linear"), lambda: torch.randint(0, 11, (3, 7)), _gpt_losses),
    "cnn": (SmallCNN, lambda: torch.randn(3, 2, 6, 6), _cnn_losses),
    "mha": (lambda: TinyGPT(attention="mha"), lambda: torch.randint(0, 11, (3, 7)), _gpt_losses),
}


@pytest.mark.parametrize(
    ("case", "route"),
    [("gpt", "ghost"), ("gpt", "materialize"), ("cnn", "ghost"), ("cnn", "materialize"), ("mha", "auto")],
)
def test_per_sample_cross_task_gram_matches_a_naive_loop(case: str, route: str) -> None:
    torch.manual_seed(5)
    make_model, make_input, make_losses = CASES[case]
    model, inputs = make_model(), make_input()
    engine = PerSampleEngine(EngineConfig(route=route))
    with recording(engine, model):
        losses = make_losses(model, inputs)
        engine.suspended = True
        stats = task_stats(losses, *_named(model), engine=engine)
        first = next(iter(losses))
        layers = reference_layers(model, lambda: make_losses(model, inputs)[first])
        expected_layers = {n for n in layers if not n.startswith("block.attn")}
        assert set(stats.sample_layers) == expected_layers  # the fallback (MHA) is left out
        names, vectors = stats.sample_names, [losses[n] for n in stats.sample_names]
        assert names == list(losses)
        for index, layer in enumerate(stats.sample_layers):
            params = [p for _, p in layers[layer]]
            for i in range(inputs.shape[0]):
                flat = torch.stack(
                    [torch.cat([g.reshape(-1) for g in _reference_grads(v[i], params)]) for v in vectors]
                )
                torch.testing.assert_close(stats.sample_gram[index, i], flat @ flat.t())


def test_tasks_do_not_change_the_per_sample_statistics_of_the_step() -> None:
    """The engine is suspended during the task backward: its hooks ignore it."""
    results = []
    for with_tasks in (False, True):
        torch.manual_seed(6)
        model = TinyGPT(attention="linear")
        ids = torch.randint(0, 11, (3, 7))
        engine = PerSampleEngine(EngineConfig(gram=True))
        with recording(engine, model):
            losses = _gpt_losses(model, ids)
            if with_tasks:
                engine.suspended = True
                task_stats(losses, *_named(model), engine=engine)
                engine.suspended = False
            losses["next"].mean().backward()
            results.append(engine.collect(3))
    plain, tasked = results
    assert list(plain) == list(tasked)
    for layer in plain:
        for key in ("norm2", "weight_dot", "sketch", "gram"):
            torch.testing.assert_close(getattr(tasked[layer], key), getattr(plain[layer], key))


def test_task_recorder_suspends_the_engine_only_during_its_backward() -> None:
    torch.manual_seed(7)
    model = TwoHeads()
    engine = PerSampleEngine(EngineConfig())
    seen: list[bool] = []

    class Names:
        def parameters(self):
            return list(model.parameters())

        def param(self, p):
            return ("layer", "layer.p")

    recorder = type("FakeRecorder", (), {"_names": Names(), "_engine": engine})()
    out_a, out_b = model(torch.randn(4, 6))
    out_a.register_hook(lambda grad: seen.append(engine.suspended))
    TaskRecorder().record({"a": out_a.mean(), "b": out_b.mean()}, recorder)
    assert seen == [True] and engine.suspended is False


# ---------------------------------------------------------------- the recorder's Python API


def _train(run_dir, steps: int, tasks: bool, micro: int = 1, profile: str = "standard") -> None:
    torch.manual_seed(8)
    model = TwoHeads()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(8, 6), torch.randn(8)
    with gradscope.Recorder(model, optimizer, run_dir=run_dir, profile=profile):
        for _ in range(steps):
            optimizer.zero_grad()
            for part_x, part_y in zip(x.chunk(micro), y.chunk(micro)):
                out_a, out_b = model(part_x)
                loss_a, loss_b = (out_a - part_y) ** 2, (out_b + part_y) ** 2
                if tasks:
                    gradscope.tasks(a=loss_a, b=loss_b)
                (loss_a + loss_b).mean().backward()
            optimizer.step()


def test_recorder_api_writes_task_tables_and_leaves_samples_unchanged(tmp_path) -> None:
    _train(tmp_path / "plain", 2, tasks=False)
    _train(tmp_path / "tasks", 2, tasks=True)
    plain, run = open_run(tmp_path / "plain"), open_run(tmp_path / "tasks")
    tasks = run.table("tasks")
    assert sorted(tasks["step"].unique()) == [0, 1]
    assert set(tasks["layer"]) == {"trunk.0", "trunk.2", "head_a", "head_b"}
    assert all(list(t) == ["a", "b"] for t in tasks["tasks"])
    task_samples = run.table("task_samples")
    assert len(task_samples) == 2 * 8 * 4 and set(task_samples["sample"]) == set(range(8))
    assert (task_samples[task_samples["layer"] == "head_a"]["norm2_b"] == 0).all()
    columns = ["step", "sample", "layer", "norm2", "weight_dot"]
    expected = plain.table("samples")[columns].sort_values(columns[:3]).reset_index(drop=True)
    actual = run.table("samples")[columns].sort_values(columns[:3]).reset_index(drop=True)
    assert expected.equals(actual)
    assert not run.meta.get("failures")


def test_accumulation_sums_grams_and_numbers_samples_across_calls(tmp_path) -> None:
    _train(tmp_path / "run", 1, tasks=True, micro=2)
    run = open_run(tmp_path / "run")
    assert len(run.table("tasks")) == 4  # one row per layer: the two calls' Grams summed
    assert set(run.table("task_samples")["sample"]) == set(range(8))


def test_minimal_profile_records_task_grams_without_per_sample_rows(tmp_path) -> None:
    _train(tmp_path / "run", 1, tasks=True, profile="minimal")
    run = open_run(tmp_path / "run")
    assert len(run.table("tasks")) == 4 and not run.has("task_samples")


def test_tasks_after_backward_warns_once_and_training_goes_on(tmp_path, capsys) -> None:
    torch.manual_seed(9)
    model = TwoHeads()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with gradscope.Recorder(model, optimizer, run_dir=tmp_path / "run"):
        for _ in range(2):
            out_a, out_b = model(torch.randn(4, 6))
            loss_a, loss_b = out_a.pow(2).mean(), out_b.pow(2).mean()
            (loss_a + loss_b).backward()
            gradscope.tasks(a=loss_a, b=loss_b)
            optimizer.step()
    err = capsys.readouterr().err
    assert err.count("gradscope: warning") == 1 and "before backward" in err
    assert len(open_run(tmp_path / "run").table("steps")) == 2


def test_per_sample_losses_of_another_batch_size_give_task_grams_only() -> None:
    torch.manual_seed(10)
    model = TwoHeads()
    engine = PerSampleEngine(EngineConfig())
    with recording(engine, model):
        out_a, out_b = model(torch.randn(4, 6))
        losses = {"a": out_a.repeat(2), "b": out_b.repeat(2)}  # [2B]: not the engine's B
        engine.suspended = True
        stats = task_stats(losses, *_named(model), engine=engine)
    assert stats.sample_gram is None and stats.sample_names == [] and len(stats.layers) == 4
