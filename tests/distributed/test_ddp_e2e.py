"""DDP on 2 gloo processes through `gradscope record -- torchrun ...` equals one process on
the same global batch (float64, 1e-6): plain steps, no_sync() accumulation, a short last batch."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradscope.analysis.probes import PROBE_METRICS
from gradscope.analysis.run import analyze_run
from gradscope.store.reader import open_run
from tests.e2e.harness import gradscope, run_plain, run_recorded

HERE = Path(__file__).resolve().parent
SCRIPT = str(HERE / "train_ddp.py")
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
KEYS = ["step", "family", "name", "scope", "key"]

pytestmark = pytest.mark.slow


def record_pair(tmp_path: Path, *args: str, options: tuple[str, ...] = ()) -> tuple[Path, Path]:
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    command = [TORCHRUN, "--nproc-per-node", "2", SCRIPT, *args]
    recorded = run_recorded(command, ddp, tmp_path, options, cwd=HERE)
    assert recorded.returncode == 0, recorded.stderr[-2000:]
    recorded = run_recorded([sys.executable, SCRIPT, "--single", *args], single, tmp_path, options, cwd=HERE)
    assert recorded.returncode == 0, recorded.stderr[-2000:]
    return ddp, single


def assert_same_metrics(ddp: Path, single: Path) -> pd.DataFrame:
    full = analyze_run(open_run(ddp), raise_errors=True).metrics
    b = analyze_run(open_run(single), raise_errors=True).metrics
    # only a multi-rank run has the local/global estimate; its micro-batches are the ranks'
    # local batches (times their no_sync micro-batches), not the single process's partition
    a = full[~full["name"].str.contains("_ddp") & (full["name"] != "micro_distance")]
    b = b[b["name"] != "micro_distance"]
    # the twin concatenates batches of several loaders, so its dataset indices are unknown
    # and it has no per-index learning dynamics; the DDP ranks' samplers give them
    a = a[a["name"].isin(set(b["name"])) | (a["family"] != "alignment")]
    # instability probes other than maxima are the lowest rank's batch (docs/distributed.md)
    rank_zero = list(set(PROBE_METRICS) - {"attn_max_logit", "attn_weight_bound", "logit_max", "act_max_abs"})
    a, b = a[~a["name"].isin(rank_zero)], b[~b["name"].isin(rank_zero)]
    # samples are named step:micro:sample of each run's own batches: compare their values per step
    samples = [m[m["scope"] == "sample"].groupby(["step", "name"])["value"].apply(sorted) for m in (a, b)]
    pd.testing.assert_series_equal(*samples, rtol=1e-6)
    joined = a[a["scope"] != "sample"].merge(b[b["scope"] != "sample"], on=KEYS, how="outer", indicator=True)
    assert (joined["_merge"] == "both").all(), joined[joined["_merge"] != "both"][KEYS]
    both_nan = joined["value_x"].isna() & joined["value_y"].isna()
    close = np.isclose(joined["value_x"], joined["value_y"], rtol=1e-6, atol=1e-9)
    assert (close | both_nan).all(), joined[~(close | both_nan)][KEYS + ["value_x", "value_y"]]
    assert joined["family"].isin(["coherence", "noise", "alignment", "stability"]).any()
    assert joined.query("name == 'b_simple' and scope == 'model'")["value_x"].notna().any()
    return full


def test_ddp_metrics_equal_one_process_on_the_global_batch(tmp_path):
    ddp, single = record_pair(tmp_path)
    metrics = assert_same_metrics(ddp, single)
    assert metrics.query("name == 'b_simple_ddp' and scope == 'model'")["value"].notna().any()
    run = open_run(ddp)
    card = run.meta["distributed"]
    assert card["backend"] == "gloo" and card["world_size"] == 2 and card["ranks"] == [0, 1]
    assert card["wrappers"] == ["DistributedDataParallel"] and card["not_covered"] == []
    layers = run.table("layers")
    assert set(layers["layer"]) == {"0", "2"}, "layers are named as in the wrapped model"
    local = layers.groupby(["step", "rank"])["local_norm2"].sum().unstack()
    assert (local[0] != local[1]).all() and local.notna().all().all()
    report = gradscope("report", "--no-color", str(ddp))
    assert report.returncode == 0, report.stderr
    assert "3 steps × 2 ranks" in report.stdout and "global batch 16 (8 per rank)" in report.stdout
    assert "loss rank 0" in report.stdout and "loss rank 1" in report.stdout


def test_no_sync_accumulation(tmp_path):
    ddp, single = record_pair(tmp_path, "--accumulate", "2", "--samples", "96")
    assert_same_metrics(ddp, single)
    steps = open_run(ddp).table("steps")
    assert (steps["backward_calls"] == 2).all() and (steps["batch_size"] == 16).all()


def test_short_last_batch_with_distributed_sampler_padding(tmp_path):
    # 41 samples on 2 ranks: DistributedSampler pads to 21 each; batches 8, 8, 5 per rank
    ddp, single = record_pair(tmp_path, "--samples", "41")
    assert_same_metrics(ddp, single)
    steps = open_run(ddp).table("steps")
    assert steps.groupby("step")["batch_size"].sum().tolist() == [16, 16, 10]


def test_local_norm2_is_the_ranks_own_gradient(tmp_path):
    """Observed twice: the tensor hooks' |G_r|^2 equals the sum of that rank's per-sample Gram."""
    run_dir = tmp_path / "full"
    command = [TORCHRUN, "--nproc-per-node", "2", SCRIPT]
    recorded = run_recorded(command, run_dir, tmp_path, ("--profile", "full"), cwd=HERE)
    assert recorded.returncode == 0, recorded.stderr[-2000:]
    run = open_run(run_dir)
    local = run.table("layers").groupby(["step", "rank", "layer"])["local_norm2"].sum()
    gram = run.table("gram")
    gram_sum = gram.set_index(["step", "rank", "layer"])["values"].map(lambda v: float(np.sum(v)))
    pd.testing.assert_series_equal(local.sort_index(), gram_sum.sort_index(), check_names=False, rtol=1e-9)


def test_fsdp_is_detected_and_marked_not_covered(tmp_path):
    command = [TORCHRUN, "--nproc-per-node", "2", str(HERE / "train_fsdp.py")]
    plain = run_plain(command, tmp_path, cwd=HERE)
    recorded = run_recorded(command, tmp_path / "run", tmp_path, cwd=HERE)
    assert recorded.returncode == 0, recorded.stderr[-2000:]
    lines = [sorted(re.findall(r"rank \d step \d loss [\d.]+", r.stdout)) for r in (plain, recorded)]
    assert lines[0] == lines[1] and len(lines[0]) == 6, "the two ranks print interleaved"
    card = open_run(tmp_path / "run").meta["distributed"]
    assert card["wrappers"] == ["FSDP (fully_shard)"] and "FSDP shards" in card["not_covered"][0]
    report = gradscope("report", "--no-color", str(tmp_path / "run")).stdout
    assert "not covered: FSDP shards" in report and "no data: FSDP shards" in report
