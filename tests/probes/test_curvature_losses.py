"""Curvature on the losses people write: computed inside the model's forward (nanoGPT / HF
style), F.nll_loss on log_softmax outputs (the PyTorch MNIST example), and a loss it
cannot replay (one warning, the reason in meta.json and in the stability verdict)."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import gradscope
from gradscope.analysis.engine import analyze_tables
from gradscope.record.config import RecordConfig
from gradscope.store.reader import open_run


class TinyGPT(nn.Module):
    """``logits, loss = model(idx, targets)`` as nanoGPT's GPT.forward."""

    def __init__(self, vocab=11, width=8):
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.lm_head = nn.Linear(width, vocab, bias=False)

    def forward(self, idx, targets=None):
        logits = self.lm_head(torch.tanh(self.wte(idx)))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss


class MnistNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 10), nn.Linear(10, 4)

    def forward(self, x):
        return F.log_softmax(self.fc2(F.relu(self.fc1(x))), dim=1)


def _full_hessian_top(model, loss_of):
    params = list(model.parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in params])

    def f(vector):
        chunks, start = {}, 0
        for (name, p) in model.named_parameters():
            chunks[name] = vector[start:start + p.numel()].view_as(p)
            start += p.numel()
        return loss_of(chunks)

    hessian = torch.autograd.functional.hessian(f, flat)
    return float(torch.linalg.eigvalsh(hessian).max())


def _curvature(run_dir):
    table = open_run(run_dir).table("probes")
    table = table[table["probe"] == "curvature"]
    return table.pivot(index="step", columns="key", values="value")


def test_loss_computed_inside_the_forward_is_replayed(tmp_path):
    torch.manual_seed(0)
    model = TinyGPT().double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    idx, targets = torch.randint(0, 11, (4, 5)), torch.randint(0, 11, (4, 5))
    losses, states = [], []
    with gradscope.Recorder(model, optimizer, run_dir=tmp_path / "run", config=RecordConfig(curvature=1)):
        for _ in range(3):
            optimizer.zero_grad()
            _, loss = model(idx, targets)
            loss.backward()
            losses.append(loss.item())
            states.append({k: v.clone() for k, v in model.state_dict().items()})
            optimizer.step()
    tops = []
    for state in states:  # after recording: a forward here would be one more micro-batch
        model.load_state_dict(state)
        loss_of = lambda p: torch.func.functional_call(model, p, (idx, targets))[1]  # noqa: E731
        tops.append(_full_hessian_top(model, loss_of))
    rows = _curvature(tmp_path / "run")
    assert list(rows.index) == [0, 1, 2]
    assert rows["loss"].tolist() == pytest.approx(losses, rel=1e-6)  # stored as float32
    assert rows["lambda_max"].tolist() == pytest.approx(tops, rel=1e-6)
    assert rows["micro_batches"].tolist() == [1, 1, 1]
    assert not open_run(tmp_path / "run").meta.get("failures")


def test_nll_loss_on_log_softmax_and_accumulation_counts_micro_batches(tmp_path):
    torch.manual_seed(0)
    model = MnistNet().double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = torch.randn(2, 8, 6, dtype=torch.float64), torch.randint(0, 4, (2, 8))
    last = []
    with gradscope.Recorder(model, optimizer, run_dir=tmp_path / "run", config=RecordConfig(curvature=1)):
        for _ in range(2):
            optimizer.zero_grad()
            for micro in range(2):
                loss = F.nll_loss(model(data[0][micro]), data[1][micro])
                (loss / 2).backward()
            last.append(loss.item())
            optimizer.step()
    rows = _curvature(tmp_path / "run")
    assert rows["loss"].tolist() == pytest.approx(last, rel=1e-6)  # the last micro-batch's loss
    assert rows["micro_batches"].tolist() == [2, 2]


def test_a_loss_it_cannot_replay_warns_once_and_the_verdict_says_so(tmp_path, capfd):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    with gradscope.Recorder(model, optimizer, run_dir=tmp_path / "run", config=RecordConfig(curvature=1)):
        for _ in range(6):
            optimizer.zero_grad()
            ((model(x) - y) ** 2).mean().backward()  # a hand-written loss: not replayed
            optimizer.step()
    run = open_run(tmp_path / "run")
    failures = [f for f in run.meta["failures"] if f["component"] == "curvature"]
    assert len(failures) == 1 and "curvature not measured" in failures[0]["message"]
    assert "curvature not measured" in capfd.readouterr().err
    tables = {name: run.table(name) for name in ("steps", "layers", "probes")}
    verdict = analyze_tables(tables, meta=run.meta).verdict("stability")
    assert "curvature not measured" in verdict.summary + " ".join(verdict.details)
