"""The recorder never breaks training; commands of every shape pass through unchanged."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from gradscope.store.reader import open_run
from tests.e2e.harness import SCRIPTS, gradscope, python, run_plain, run_recorded


def test_python_dash_m_module(tmp_path):
    command = [sys.executable, "-m", "toypkg.train"]
    plain = run_plain(command, tmp_path)
    recorded = run_recorded(command, tmp_path / "run", tmp_path, options=("--profile", "minimal"))
    assert recorded.stdout == plain.stdout and recorded.returncode == 0
    assert len(open_run(tmp_path / "run").table("steps")) == 3


def test_two_models_two_optimizers(tmp_path):
    plain = run_plain(python("train_gan.py"), tmp_path)
    recorded = run_recorded(
        python("train_gan.py"), tmp_path / "run", tmp_path, options=("--profile", "minimal")
    )
    assert recorded.stdout == plain.stdout
    run = open_run(tmp_path / "run")
    steps = run.table("steps").sort_values("step")
    assert list(steps["optimizer"]) == [0, 1] * 3
    layers = set(run.table("layers")["layer"])
    assert len(layers) == 4, layers  # both models' layers, with distinct names


def test_a_failing_hook_disables_itself_and_training_goes_on(tmp_path):
    env = {"GS_SABOTAGE": "1"}
    plain = run_plain(python("train_sabotaged.py"), tmp_path)
    recorded = run_recorded(
        python("train_sabotaged.py"), tmp_path / "run", tmp_path, options=("--profile", "minimal"), env=env
    )
    assert recorded.returncode == 0
    assert recorded.stdout == plain.stdout
    warnings = [line for line in recorded.stderr.splitlines() if line.startswith("gradscope: warning")]
    assert len(warnings) == 1 and "planted failure" in warnings[0]
    meta = open_run(tmp_path / "run").meta
    assert meta["status"] == "finished"
    assert any("planted failure" in f["message"] for f in meta["failures"])


def test_unwritable_shard_folder_warns_once_and_training_goes_on(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "steps").write_text("a file where a folder should be")
    recorded = run_recorded(
        python("train_sabotaged.py"), run_dir, tmp_path, options=("--profile", "minimal", "--force")
    )
    assert recorded.returncode == 0
    assert recorded.stdout.count("loss") == 4
    warnings = [line for line in recorded.stderr.splitlines() if line.startswith("gradscope: warning")]
    assert len(warnings) == 1 and "writer" in warnings[0]
    assert any(
        "writer" in f["component"] for f in json.loads((run_dir / "meta.json").read_text())["failures"]
    )


def test_torch_save_of_the_model_is_unchanged(tmp_path):
    script = tmp_path / "save.py"
    script.write_text(
        "import io, hashlib, torch\n"
        "torch.manual_seed(0)\n"
        "m = torch.nn.Linear(3, 2)\n"
        "o = torch.optim.SGD(m.parameters(), lr=0.1)\n"
        "m(torch.randn(4, 3)).sum().backward(); o.step()\n"
        "buf = io.BytesIO(); torch.save(m, buf)\n"
        "print(hashlib.sha256(buf.getvalue()).hexdigest())\n"
    )
    plain = run_plain([sys.executable, str(script)], tmp_path)
    recorded = run_recorded([sys.executable, str(script)], tmp_path / "run", tmp_path)
    assert plain.returncode == 0 and recorded.stdout == plain.stdout


def _one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_report_on_missing_path(tmp_path):
    assert "no such run directory" in _one_line_error(gradscope("report", str(tmp_path / "nope")))


def test_report_on_a_directory_that_is_not_a_run(tmp_path):
    assert "not a gradscope run" in _one_line_error(gradscope("report", str(tmp_path)))


def test_report_on_a_newer_format_version(tmp_path):
    (tmp_path / "meta.json").write_text(json.dumps({"format_version": 99}))
    assert "v99" in _one_line_error(gradscope("report", str(tmp_path)))


def test_report_on_corrupt_meta(tmp_path):
    (tmp_path / "meta.json").write_text("{not json")
    assert "not valid JSON" in _one_line_error(gradscope("report", str(tmp_path)))


def test_record_without_a_command(tmp_path):
    assert "no command" in _one_line_error(gradscope("record", "--out", str(tmp_path / "r")))


def test_record_with_a_bad_profile(tmp_path):
    line = _one_line_error(gradscope("record", "--profile", "huge", "--", "true"))
    assert "--profile" in line


def test_corrupt_shard_is_skipped_and_reported(tmp_path):
    run_recorded(python("train_sabotaged.py"), tmp_path / "run", tmp_path, options=("--profile", "minimal"))
    shard = next((tmp_path / "run" / "layers").rglob("*.parquet"))
    shard.write_bytes(b"garbage")
    proc = gradscope("report", "--no-color", str(tmp_path / "run"))
    assert proc.returncode == 0
    assert "unreadable shard skipped" in proc.stdout
    assert SCRIPTS.exists()


def test_torchrun_workers_record_their_own_rank(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--nproc-per-node", "2", str(SCRIPTS / "train_ddp.py")]
    recorded = run_recorded(command, tmp_path / "run", tmp_path)
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout.count("step") == 3
    run = open_run(tmp_path / "run")
    steps = run.table("steps")
    assert sorted(steps["rank"].unique()) == [0, 1] and len(steps) == 6
    assert set(run.table("samples")["rank"]) == {0, 1}
    assert run.meta["world_size"] == 2 and run.meta["layers"], "the launcher clobbered meta.json"


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_dataloader_workers_stay_silent(start_method, tmp_path):
    command = python("train_dataloader.py", start_method)
    plain = run_plain(command, tmp_path)
    recorded = run_recorded(command, tmp_path / "run", tmp_path)
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout == plain.stdout
    run = open_run(tmp_path / "run")
    assert len(run.table("steps")) == 8 and set(run.table("steps")["rank"]) == {0}
    assert run.meta["layers"] and not run.meta["failures"]
    assert run.meta["epoch_starts"] == [0, 4], "epochs come from the training loader, not validation"
