"""Lightning's own DDP launcher (it spawns rank 1 as a copy of the script, no torchrun, no
RANK in the environment): each process records its own rank, and the run equals the same
script under torchrun (issue 13 follow-up)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gradscope.analysis.run import analyze_run
from gradscope.store.reader import open_run
from tests.e2e.harness import run_recorded
from tests.integrations.conftest import import_or_skip, same_table

HERE = Path(__file__).resolve().parent
SCRIPT = str(HERE / "train_lightning_ddp.py")
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
KEYS = ["step", "family", "name", "scope", "key"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spawned(tmp_path_factory) -> Path:
    import_or_skip("lightning.pytorch")
    tmp = tmp_path_factory.mktemp("litddp")
    recorded = run_recorded([sys.executable, SCRIPT], tmp / "spawn", tmp, cwd=tmp)
    assert recorded.returncode == 0, recorded.stderr[-2000:]
    return tmp / "spawn"


def _assert_two_ranks(run_dir: Path) -> None:
    run = open_run(run_dir)
    steps = run.table("steps")
    assert sorted(steps["rank"].unique()) == [0, 1]
    assert steps.groupby("rank").size().tolist() == [2, 2], "64 samples / (8 x 2 devices x 2 micro-batches)"
    assert not list(run_dir.glob("*/clash-*")), "no two processes claimed the same rank"
    card = run.meta["distributed"]
    assert card["world_size"] == 2 and card["local_gradients"] is not None


def test_lightning_spawned_ranks_equal_torchrun(spawned, tmp_path) -> None:
    _assert_two_ranks(spawned)
    command = [TORCHRUN, "--nproc-per-node", "2", SCRIPT]
    recorded = run_recorded(command, tmp_path / "tr", tmp_path, cwd=tmp_path)
    assert recorded.returncode == 0, recorded.stderr[-2000:]
    a, b = open_run(spawned), open_run(tmp_path / "tr")
    same_table(a.table("steps"), b.table("steps"), ["step", "rank"])
    same_table(a.table("layers"), b.table("layers"), ["step", "rank", "layer", "param"])
    metrics = [analyze_run(r, raise_errors=True).metrics.drop(columns="run", errors="ignore") for r in (a, b)]
    same_table(*metrics, KEYS)
    assert metrics[0].query("name == 'b_simple_ddp' and scope == 'model'")["value"].notna().any()


def test_lightning_callback_records_each_rank(spawned, tmp_path) -> None:
    done = subprocess.run([sys.executable, SCRIPT, "--cb", str(tmp_path / "cb")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    _assert_two_ranks(tmp_path / "cb")
    a, b = open_run(spawned), open_run(tmp_path / "cb")
    same_table(a.table("steps"), b.table("steps"), ["step", "rank"])
    same_table(a.table("layers"), b.table("layers"), ["step", "rank", "layer", "param"])
