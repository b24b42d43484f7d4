"""CLI habits (issue 17): --version, one-line usage errors with exit 2, choices in --help,
[[rule]] shown literally, binary output refuses a terminal, "did you mean" for typos,
configs by name, the record summary line."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from gradscope import __version__
from tests.report.conftest import REPO
from tests.report.test_check import run_main

USAGE_ERRORS = [
    ["nosuch"], ["--bogus"], ["report"], ["report", "x", "--bogus"], ["report", "x", "--width", "abc"],
    ["metrics", "x", "--format", "xml"], ["metrics", "x", "--family", "nois"], ["check"],
    ["check", "x", "--format", "yaml"], ["compare"], ["compare", "a"],
    ["record", "--profile", "huge", "--", "x"],
    ["record", "--reduction", "avg", "--", "x"], ["record", "--sketch", "999", "--", "x"],
    ["demo", "--steps", "2"], ["check", "x", "--config", "nosuch-profile"],
]


def gradscope(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "gradscope", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_version() -> None:
    code, out, _ = run_main(["--version"])
    assert code == 0 and out.strip() == f"gradscope {__version__}"


@pytest.mark.parametrize("args", USAGE_ERRORS, ids=" ".join)
def test_usage_error_is_one_line_exit_2(args: list[str]) -> None:
    code, out, err = run_main(args)
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and err.startswith("gradscope: error: ")
    assert "╭" not in err and "Traceback" not in err


def test_usage_error_spawned_is_one_line() -> None:
    done = gradscope("report", "--nope")
    assert done.returncode == 2 and done.stderr.count("\n") == 1


def test_help_shows_choices_and_rule_tables() -> None:
    _, record, _ = run_main(["record", "--help"])
    assert "minimal|standard|full" in record and "auto|mean|sum" in record
    _, metrics, _ = run_main(["metrics", "--help"])
    assert "json|csv|parquet" in metrics and "conflict|coherence" in metrics and "<str>" not in metrics
    _, check, _ = run_main(["check", "--help"])
    assert "[[rule]]" in check and "default|strict" in check


def test_parquet_refuses_a_terminal(synthetic_run: Path) -> None:
    """stdout a terminal (a pseudo-terminal here): no Parquet bytes written to it."""
    main, terminal = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "gradscope", "metrics", str(synthetic_run), "--format",
                               "parquet"], env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=terminal,
                              stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(terminal)
        os.close(main)
    assert done.returncode == 2 and "binary" in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("out", [["--out", "-"], ["--out", "/dev/stdout"]])
def test_parquet_out_dash_or_dev_stdout_refuses_a_terminal(synthetic_run: Path, tmp_path: Path,
                                                          out: list[str]) -> None:
    main, terminal = pty.openpty()
    try:
        done = subprocess.run([sys.executable, "-m", "gradscope", "metrics", str(synthetic_run), "--format",
                               "parquet", *out], env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=terminal,
                              stderr=subprocess.PIPE, text=True, timeout=300, cwd=tmp_path)
    finally:
        os.close(terminal)
        os.close(main)
    assert done.returncode == 2 and "binary" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "-").exists()


def test_parquet_out_dash_is_stdout(synthetic_run: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "gradscope", "metrics", str(synthetic_run), "--format",
                           "parquet", "--out", "-"], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout[:4] == b"PAR1" and not (tmp_path / "-").exists()


@pytest.mark.parametrize("command", ["", "record", "report", "metrics", "check", "compare", "demo", "export"])
def test_dash_h_is_help(command: str) -> None:
    code, out, _ = run_main([command, "-h"] if command else ["-h"])
    assert code == 0 and "Usage:" in out and "-h, --help" in out


def test_config_key_rule_names_metric(tmp_path: Path) -> None:
    config = tmp_path / "gates.toml"
    config.write_text("[[rule]]\nrule = 'noise.b_simple < 4096'\n")
    code, _, err = run_main(["check", "x", "--config", str(config)])
    assert code == 2 and "unknown key 'rule'" in err and 'goes in metric = "..."' in err


def test_typo_in_a_rule_is_an_unknown_metric(synthetic_run: Path, tmp_path: Path) -> None:
    code, _, err = run_main(["check", str(synthetic_run), "-r", "noise.bsimple.last < 4096"])
    assert code == 2 and "unknown metric noise.bsimple (did you mean noise.b_simple?)" in err
    assert "table" not in err
    config = tmp_path / "gates.toml"  # optional does not hide a typo
    config.write_text('[[rule]]\nmetric = "stability.grad_nrom.max < 10"\noptional = true\n')
    code, _, err = run_main(["check", str(synthetic_run), "-c", str(config)])
    assert code == 2 and "did you mean stability.grad_norm" in err


def test_shipped_configs_by_name(synthetic_run: Path) -> None:
    for name in ("default", "strict"):
        code, out, err = run_main(["check", str(synthetic_run), "--config", name, "--no-color"])
        assert code in (0, 1), err
        assert "nonfinite" in out


@pytest.mark.slow
def test_record_ends_with_one_summary_line(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        "import torch, torch.nn as nn\n"
        "torch.manual_seed(0)\n"
        "model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))\n"
        "opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "for step in range(5):\n"
        "    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))\n"
        "    loss = nn.functional.cross_entropy(model(x), y)\n"
        "    opt.zero_grad(); loss.backward(); opt.step()\n"
    )
    done = gradscope("record", "--out", "run", "--", sys.executable, str(script), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last == ("gradscope: run run: 5 steps, per-sample coverage 100% of parameters, 0 warnings "
                    "(gradscope report run)")


@pytest.mark.slow
def test_record_summary_counts_the_warning_it_printed_and_names_the_exit_code(tmp_path: Path) -> None:
    """A script with no backward that exits 3: the warning just shown is counted."""
    script = tmp_path / "infer.py"
    script.write_text("import sys, torch\nmodel = torch.nn.Linear(2, 1)\n"
                      "print(model(torch.randn(3, 2)).sum().item())\nsys.exit(3)\n")
    done = gradscope("record", "--out", "run", "--", sys.executable, str(script), cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 3 and any("warning: nothing was recorded" in line for line in lines)
    assert "1 warning," in lines[-1] and "the script exited with code 3" in lines[-1]
