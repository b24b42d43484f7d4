"""Damaged shards and malformed meta.json / events.jsonl: the rest of the run is analysed,
each problem named once; only an unreadable run card stops a command (one line, exit 2)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.fault import harness
from tests.fault.conftest import assert_one_line_error
from tests.fault.damage import META_DAMAGE, META_FATAL, SHARD_DAMAGE

pytestmark = pytest.mark.slow  # the session fixture records one run

ANALYSES = (("report", "--no-color"), ("metrics",), ("check", "--rule", "stability.loss.last < 1e9"))


@pytest.mark.parametrize("kind", sorted(SHARD_DAMAGE))
def test_damaged_shard_is_skipped_with_one_warning(kind, run_copy, cli):
    run = run_copy(kind)
    table = SHARD_DAMAGE[kind](run)
    for command, *options in ANALYSES:
        code, out, err = cli(command, str(run), *options)
        assert "Traceback" not in err and "internal error" not in err, err
        assert code in (0, 1, 2), err
    code, out, err = cli("report", str(run), "--no-color")
    assert code == 0
    assert f"{table}/rank-0/part-000000.parquet" in out.replace("│", "").replace("\n", "")
    assert "loss" in out  # the steps table (undamaged for most kinds) is still analysed


def test_damaged_shard_in_compare(run_copy, cli):
    good, bad = run_copy("good"), run_copy("bad")
    SHARD_DAMAGE["ff-bytes"](bad)
    code, out, err = cli("compare", str(good), str(bad), "--no-color")
    assert code == 0, err


def test_ff_bytes_are_caught_by_page_checksums(run_copy):
    from gradscope.store.reader import open_run

    run = run_copy("ff")
    SHARD_DAMAGE["ff-bytes"](run)
    opened = open_run(run)
    list(opened.record_batches("samples"))
    assert any("CRC" in p or "checksum" in p for p in opened.problems), opened.problems


@pytest.mark.parametrize("kind", sorted(META_DAMAGE))
def test_malformed_field_is_ignored_with_a_warning(kind, run_copy, cli):
    run = run_copy(kind)
    META_DAMAGE[kind](run)
    for command, *options in ANALYSES:
        code, out, err = cli(command, str(run), *options)
        assert "Traceback" not in err and "internal error" not in err, err
        assert code in (0, 1), err
    code, out, err = cli("report", str(run), "--no-color")
    flat = " ".join(out.replace("│", " ").split())
    assert "ignored" in flat or "skipped" in flat, out


@pytest.mark.parametrize("kind", sorted(META_FATAL))
def test_unreadable_run_card_is_one_line(kind, run_copy, cli):
    run = run_copy(kind)
    META_FATAL[kind](run)
    for command, *options in ANALYSES:
        code, out, err = cli(command, str(run), *options)
        assert_one_line_error(code, err)


def test_spawned_report_on_a_damaged_run(run_copy):
    """The console entry point, as a user runs it."""
    run = run_copy("spawned")
    SHARD_DAMAGE["random-page-bytes"](run)
    META_DAMAGE["layer-without-numel"](run)
    done = subprocess.run([sys.executable, "-m", "gradscope", "report", str(run), "--no-color"],
                          env=harness.environment(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr


def test_a_run_whose_steps_shards_are_gone_does_not_blame_the_recorder(cli, run_copy):
    """No readable steps row while meta.json counts steps: the shards were lost or damaged;
    the report used to say 'the recorder saw no optimizer step' with no warning (issue 12)."""
    import shutil

    run = run_copy("nosteps")
    shutil.rmtree(run / "steps")
    code, out, err = cli("report", str(run), "--no-color")
    assert code == 0 and "Traceback" not in err
    text = " ".join(out.split())
    assert "saw no optimizer step" not in text and "meta.json says steps were recorded" in text


def test_a_fifo_or_deep_nesting_in_place_of_the_card_or_events_never_hangs(cli, run_copy):
    """A FIFO named meta.json or events.jsonl blocked every command forever; a deeply nested
    meta.json was an 'internal error' (RecursionError), not an unreadable card (issue 12)."""
    import os

    run = run_copy("fifo-meta")
    (run / "meta.json").unlink()
    os.mkfifo(run / "meta.json")
    code, _, err = cli("report", str(run))
    assert_one_line_error(code, err)
    assert "not a regular file" in err
    run = run_copy("fifo-events")
    (run / "events.jsonl").unlink()
    os.mkfifo(run / "events.jsonl")
    code, out, err = cli("report", str(run), "--no-color")
    assert code == 0 and "not a regular file" in " ".join(out.split()), out + err
    run = run_copy("deep")
    (run / "meta.json").write_text("[" * 100_000 + "]" * 100_000)
    code, _, err = cli("metrics", str(run))
    assert_one_line_error(code, err)
    assert "nested too deeply" in err
