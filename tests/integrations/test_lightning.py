"""Lightning's callback: accumulate_grad_batches=2 under bf16-mixed, against the trainer's own
numbers, and against the same script recorded by ``gradscope record``."""

from __future__ import annotations

import importlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from gradscope.analysis import analyze
from gradscope.store.reader import open_run
from tests.e2e.harness import gradscope
from tests.integrations.conftest import SCRIPTS, import_or_skip, same_table

EXAMPLE = SCRIPTS / "lightning_example.py"


@pytest.fixture(scope="module")
def lightning():
    return import_or_skip("lightning.pytorch")


def _example():
    sys.path.insert(0, str(SCRIPTS))
    try:
        return importlib.import_module("lightning_example")
    finally:
        sys.path.remove(str(SCRIPTS))


def _trainer_log(lightning):
    class TrainerLog(lightning.Callback):
        """What the trainer itself says: the step each micro-batch feeds, the loss it
        backpropagates (Lightning divides by accumulate_grad_batches), the lr in use."""

        def __init__(self) -> None:
            self.batches: list[tuple[int, float, float]] = []
            self._step = 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self._step = trainer.global_step
            self._lr = trainer.optimizers[0].param_groups[0]["lr"]

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.batches.append((self._step, float(outputs["loss"]), self._lr))

    return TrainerLog()


@pytest.mark.slow
def test_steps_and_losses_equal_the_trainers(lightning, tmp_path) -> None:
    from gradscope.integrations.lightning import GradscopeCallback

    log = _trainer_log(lightning)
    callback = GradscopeCallback(tmp_path / "run")
    trainer, model, loader = _example().build([callback, log], epochs=2, accumulate=2, precision="bf16-mixed")
    trainer.fit(model, loader)
    assert callback.run_dir == tmp_path / "run"
    run = open_run(tmp_path / "run")
    steps = run.table("steps").sort_values("step")
    assert trainer.global_step == 8 and list(steps["step"]) == list(range(8))  # 16 batches / 2
    per_step = {}
    for step, loss, lr in log.batches:
        per_step.setdefault(step, []).append((loss, lr))
    assert [len(v) for v in per_step.values()] == [2] * 8
    expected = [sum(loss for loss, _ in micro) for micro in per_step.values()]
    np.testing.assert_allclose(steps["loss"], expected, rtol=1e-6)
    assert (steps["backward_calls"] == 2).all() and (steps["batch_size"] == 16).all()
    assert np.isfinite(steps["grad_norm"]).all() and (steps["per_sample_scale"] == 16).all()
    samples = run.table("samples")
    assert set(samples.groupby(["step", "micro"]).size()) == {8 * 3}  # 8 samples x 3 layers
    assert run.meta["status"] == "finished" and run.meta["trainer"] == {
        "name": "lightning", "version": lightning.__version__, "global_step_start": 0,
        "accumulate_grad_batches": 2, "precision": "bf16-mixed", "automatic_optimization": True,
        "global_step_end": 8, "steps_recorded": 8,
    }
    metrics = analyze(run.path).metrics
    lr = metrics[metrics["name"] == "lr"].sort_values("step")
    np.testing.assert_allclose(lr["value"], [v[0][1] for v in per_step.values()], rtol=1e-12)
    assert set(metrics.loc[metrics["name"] == "update_norm", "key"]) == {"net.0", "net.1", "net.3"}


@pytest.mark.slow
def test_callback_and_gradscope_record_give_the_same_tables(lightning, tmp_path) -> None:
    by_callback = subprocess.run([sys.executable, str(EXAMPLE), "--out", str(tmp_path / "callback")],
                                 capture_output=True, text=True, timeout=300)
    assert by_callback.returncode == 0, by_callback.stderr
    recorded = gradscope("record", "--out", str(tmp_path / "record"), "--",
                         sys.executable, str(EXAMPLE), "--no-gradscope")
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout == by_callback.stdout  # the same training, to the printed digit
    a, b = open_run(tmp_path / "callback"), open_run(tmp_path / "record")
    same_table(a.table("steps"), b.table("steps"), ["step", "rank"])
    same_table(a.table("layers"), b.table("layers"), ["step", "rank", "param"])
    same_table(a.table("samples"), b.table("samples"), ["step", "rank", "micro", "sample", "layer"])
    assert [layer["name"] for layer in a.meta["layers"]] == [layer["name"] for layer in b.meta["layers"]]


@pytest.mark.slow
def test_a_failing_training_step_is_a_crashed_run(lightning, tmp_path) -> None:
    """The script's own exception reaches it unchanged; the steps before it are kept."""
    from gradscope.integrations.lightning import GradscopeCallback

    example = _example()

    class Failing(example.Classifier):
        def training_step(self, batch, batch_idx):
            if batch_idx == 5:
                raise ValueError("bad batch 5")
            return super().training_step(batch, batch_idx)

    callback = GradscopeCallback(tmp_path / "run")
    trainer, _, loader = example.build([callback], epochs=1)
    with pytest.raises(ValueError, match="bad batch 5"):
        trainer.fit(Failing(), loader)
    run = open_run(tmp_path / "run")
    assert run.meta["status"] == "crashed" and run.meta["trainer"]["global_step_end"] == 2
    assert list(run.table("steps")["step"]) == [0, 1]  # batches 0-3; batch 4's backward had no step


@pytest.mark.slow
def test_manual_optimization(lightning, tmp_path) -> None:
    """manual_backward per micro-batch, opt.step() every second batch (Lightning's manual
    accumulation): Lightning hands step() a closure that runs no backward."""
    from gradscope.integrations.lightning import GradscopeCallback

    example = _example()
    losses = []

    class Manual(example.Classifier):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self(x), y) / 2
            self.manual_backward(loss)
            losses.append(loss.item())
            if batch_idx % 2 == 1:
                optimizer = self.optimizers()
                optimizer.step()
                optimizer.zero_grad()

    callback = GradscopeCallback(tmp_path / "run")
    trainer, _, loader = example.build([callback], epochs=1, accumulate=1, precision="32-true")
    torch.manual_seed(0)
    trainer.fit(Manual(), loader)
    steps = open_run(tmp_path / "run").table("steps").sort_values("step")
    assert trainer.global_step == 4 and list(steps["step"]) == [0, 1, 2, 3]
    assert (steps["backward_calls"] == 2).all()
    np.testing.assert_allclose(steps["loss"], np.add(losses[0::2], losses[1::2]), rtol=1e-6)


def test_bad_option_fails_before_fit(lightning) -> None:
    from gradscope.errors import GradscopeError
    from gradscope.integrations.lightning import GradscopeCallback

    with pytest.raises(GradscopeError, match="--every must be at least 1"):
        GradscopeCallback("runs/x", every=0)


def test_missing_lightning_is_one_line() -> None:
    code = ("import sys\n"
            "for m in ('lightning', 'lightning.pytorch', 'pytorch_lightning'): sys.modules[m] = None\n"
            "try:\n    import gradscope.integrations.lightning\nexcept ImportError as err:\n    print(err)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == ("gradscope's Lightning callback needs the lightning package: "
                          "pip install 'gradscope[lightning]'\n")


def test_force_replaces_an_earlier_runs_files(lightning, tmp_path) -> None:
    """force=True clears what an earlier run left, as ``gradscope record --force`` does: a
    re-run read 15 steps for an 8-step run (issue 13 follow-up)."""
    import shutil

    from gradscope.integrations.lightning import GradscopeCallback

    for epochs in (2, 1):
        callback = GradscopeCallback(tmp_path / "run", force=True)
        trainer, model, loader = _example().build([callback], epochs=epochs)
        trainer.fit(model, loader)
        if epochs == 2:  # as an earlier run on two devices would have left it
            shutil.copytree(tmp_path / "run" / "steps" / "rank-0", tmp_path / "run" / "steps" / "rank-1")
    steps = open_run(tmp_path / "run").table("steps")
    assert list(steps["step"]) == [0, 1, 2, 3] and trainer.global_step == 4
    assert not (tmp_path / "run" / "steps" / "rank-1").exists()


CALLS_NET = '''
import sys
sys.path.insert(0, {scripts!r})
import torch.nn.functional as F
import lightning_example as example


class CallsNet(example.Classifier):
    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)  # the LightningModule itself never runs


trainer, _, loader = example.build([], epochs=1)
trainer.fit(CallsNet(), loader)
'''


@pytest.mark.slow
def test_record_names_layers_from_the_lightning_module(lightning, tmp_path) -> None:
    """training_step calling self.net(x): gradscope record names the layers net.0, as the
    callback does, not 0 (the LightningModule holds net but never runs)."""
    script = tmp_path / "calls_net.py"
    script.write_text(CALLS_NET.format(scripts=str(SCRIPTS)))
    recorded = gradscope("record", "--out", str(tmp_path / "run"), "--", sys.executable, str(script))
    assert recorded.returncode == 0, recorded.stderr
    layers = [layer["name"] for layer in open_run(tmp_path / "run").meta["layers"]]
    assert layers == ["net.0", "net.1", "net.3"]


def test_loss_is_the_mean_micro_batch_loss_on_a_short_last_step(lightning, tmp_path) -> None:
    """7 batches per epoch, accumulate_grad_batches=2: the epoch's last step has 1 micro-batch,
    whose loss Lightning still divides by 2; steps.loss is not halved there."""
    from gradscope.integrations.lightning import GradscopeCallback

    example, log = _example(), _trainer_log(lightning)
    callback = GradscopeCallback(tmp_path / "run")
    trainer, model, _ = example.build([callback, log], epochs=1)
    trainer.fit(model, example.data(samples=56))
    steps = open_run(tmp_path / "run").table("steps").sort_values("step")
    assert steps["backward_calls"].tolist() == [2, 2, 2, 1]
    per_step: dict[int, list[float]] = {}
    for step, divided, _ in log.batches:
        per_step.setdefault(step, []).append(2 * divided)  # what training_step returned
    np.testing.assert_allclose(steps["loss"], [np.mean(v) for v in per_step.values()], rtol=1e-6)
