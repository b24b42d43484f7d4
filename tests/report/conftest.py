"""Run directories for the report tests: synthetic (pyarrow, following store/schema.py,
with tasks, Gram, groups and hostile names) and one recorded by ``gradscope record``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gradscope.store.meta import EVENTS_FILE, META_FILE, new_meta, write_json_atomic
from gradscope.store.schema import TABLES

HOSTILE_LAYER = "<script>alert(1)</script>"
HOSTILE_TASK = '"><img src=x>'
REPO = Path(__file__).resolve().parents[2]
GRADSCOPE = Path(sys.executable).parent / "gradscope"  # the console script


def _write(run: Path, table: str, rows: dict[str, list]) -> None:
    folder = run / table / "rank-0"
    folder.mkdir(parents=True, exist_ok=True)
    count = max(len(values) for values in rows.values())
    rows = {name: values or [None] * count for name, values in rows.items()}  # columns not drawn: null
    pq.write_table(pa.table(rows, schema=TABLES[table]), folder / "part-000000.parquet")


def _layer_meta(layers: tuple[str, ...], size: int) -> list[dict]:
    return [
        {"name": n, "type": "Linear", "params": [{"name": "weight", "shape": [size], "numel": size}],
         "numel": size, "method": "ghost", "covered": True, "reason": ""}
        for n in layers
    ]


def make_run(
    path: Path,
    *,
    steps: int = 24,
    batch: int = 8,
    layers: tuple[str, ...] = ("fc1", HOSTILE_LAYER),
    tasks: tuple[str, ...] = ("seg", HOSTILE_TASK),
    task_cos: float = -0.6,
    spike_at: int | None = 18,
    seed: int = 0,
    with_samples: bool = True,
    inf_at: int | None = None,
    meta_extra: dict | None = None,
) -> Path:
    """A finished run with per-sample gradients drawn as signal + noise in P = 6 dimensions,
    two tasks whose gradients meet at cosine ``task_cos``, and a loss spike.

    ``inf_at``: at that step sample 0's gradient overflows to inf in backward, and the
    script zeroes the gradient before the optimizer step (as GradScaler or a
    ``torch.nan_to_num`` guard does): the weights and LAYERS' norms stay finite, the
    per-sample rows and sum_norm2 recorded in backward hold inf."""
    rng = np.random.default_rng(seed)
    size = 6
    path.mkdir(parents=True)
    meta = new_meta(["python", "train.py", "--name", HOSTILE_LAYER], {"profile": "standard", "every": 1})
    meta.update(status="finished", ended=meta["started"], layers=_layer_meta(layers, size),
                torch_version="test", steps=steps, steps_per_epoch=8, **(meta_extra or {}))
    write_json_atomic(path / META_FILE, meta)
    (path / EVENTS_FILE).write_text(
        json.dumps({"level": "warning", "step": 3, "message": f"hook failed on {HOSTILE_LAYER}"}) + "\n"
    )
    step_rows = {n: [] for n in TABLES["steps"].names}
    layer_rows = {n: [] for n in TABLES["layers"].names}
    sample_rows = {n: [] for n in TABLES["samples"].names}
    gram_rows = {n: [] for n in TABLES["gram"].names}
    task_rows = {n: [] for n in TABLES["tasks"].names}
    weights = {layer: rng.normal(size=size) * 3 for layer in layers}
    initial = {layer: w.copy() for layer, w in weights.items()}
    for step in range(steps):
        loss = 2.0 * np.exp(-step / 10) + 0.05 * rng.random() + (3.0 if step == spike_at else 0.0)
        total_norm2 = 0.0
        for layer in layers:
            signal = -0.3 * weights[layer] / np.linalg.norm(weights[layer])
            grads = signal + rng.normal(scale=0.5, size=(batch, size))  # (B, P)
            total = grads.sum(axis=0)
            update = -0.01 * total / batch
            if step == inf_at:
                grads[0, 0] = np.inf
                update = np.zeros(size)  # the script zeroed the gradient before opt.step()
            before = weights[layer].copy()
            weights[layer] = before + update
            mean_grad = np.zeros(size) if step == inf_at else total / batch  # as opt.step() saw it
            total_norm2 += float(mean_grad @ mean_grad)
            _append(layer_rows, step=step, rank=0, layer=layer, param=f"{layer}.weight",
                    grad_norm=float(np.linalg.norm(mean_grad)), weight_norm=float(np.linalg.norm(before)),
                    update_norm=float(np.linalg.norm(update)),
                    init_distance=float(np.linalg.norm(before - initial[layer])), nonfinite=False,
                    sum_norm2=np.inf if step == inf_at else float(total @ total))
            for i, g in enumerate(grads):
                _append(sample_rows, step=step, rank=0, micro=0, sample=i, layer=layer,
                        norm2=float(g @ g), weight_dot=float(g @ before), loss=loss + 0.1 * i,
                        group=i % 2, sketch=[float(x) for x in g[:4]])
            with np.errstate(invalid="ignore"):  # inf * 0 in the overflowed row
                gram = (grads @ grads.T).ravel().tolist()
            _append(gram_rows, step=step, rank=0, micro=0, layer=layer, size=batch, exact=True,
                    values=gram)
            if tasks:
                _append(task_rows, step=step, rank=0, layer=layer, tasks=list(tasks),
                        values=_task_gram(len(tasks), task_cos + 0.1 * rng.normal()))
        _append(step_rows, step=step, rank=0, optimizer=0, wall_time=0.1 * step, step_time=0.1,
                recorder_time=0.001, loss=loss, backward_calls=1, batch_size=batch, skipped=False,
                recorded=True, grad_norm=total_norm2**0.5, loss_scale=float("nan"),
                per_sample_scale=float(batch), per_sample_scale_source="read",
                hparams=json.dumps([{"lr": 0.1 * 0.97**step}]))
    _write(path, "steps", step_rows)
    _write(path, "layers", layer_rows)
    if with_samples:
        _write(path, "samples", sample_rows)
        _write(path, "gram", gram_rows)
    if tasks:
        _write(path, "tasks", task_rows)
    return path


def make_empty_run(path: Path, *, status: str = "finished", exit_code: int | None = 0,
                   recording: dict | None = None, tables: tuple[str, ...] = ()) -> Path:
    """A run directory as a script leaves it when no step was recorded: meta.json, and the
    (empty) ``tables`` named, written with the store's schemas."""
    path.mkdir(parents=True)
    meta = new_meta(["python", "train.py"], {"profile": "standard", "every": 1})
    meta.update(status=status, exit_code=exit_code, ended=meta["started"], torch_version="test",
                layers=_layer_meta(("fc1",), 6))
    if recording is not None:
        meta["recording"] = recording
    write_json_atomic(path / META_FILE, meta)
    for table in tables:
        _write(path, table, {n: [] for n in TABLES[table].names})
    return path


def _task_gram(count: int, cos: float) -> list[float]:
    matrix = np.full((count, count), float(np.clip(cos, -0.99, 0.99)))
    np.fill_diagonal(matrix, 1.0)
    return (matrix * np.outer(np.arange(1, count + 1), np.arange(1, count + 1)) ** 0.5).ravel().tolist()


def _append(rows: dict[str, list], **values: object) -> None:
    for name, value in values.items():
        rows[name].append(value)


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs") / "synthetic")


@pytest.fixture(scope="session")
def calm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """No task conflict, no spike, different seed: the 'after' of a compare."""
    return make_run(tmp_path_factory.mktemp("runs") / "calm", task_cos=0.5, spike_at=None, seed=1)


@pytest.fixture(scope="session")
def minimal_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Steps and layers only: no samples, Gram or tasks."""
    return make_run(tmp_path_factory.mktemp("runs") / "minimal", tasks=(), with_samples=False)


TRAIN_SCRIPT = """
import torch, torch.nn as nn
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(128, 8), torch.randint(0, 3, (128,))
for step in range(20):
    idx = torch.randint(0, 128, (16,))
    loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
    opt.zero_grad(); loss.backward(); opt.step()
"""


@pytest.fixture(scope="session")
def recorded_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run: a tiny MLP recorded with the standard profile by the CLI."""
    folder = tmp_path_factory.mktemp("recorded")
    script = folder / "train.py"
    script.write_text(TRAIN_SCRIPT)
    run = folder / "run"
    command = [str(GRADSCOPE), "record", "--out", str(run), "--", sys.executable, str(script)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)
    if done.returncode != 0:
        pytest.skip(f"gradscope record failed here: {done.stderr[-300:]}")
    return run
