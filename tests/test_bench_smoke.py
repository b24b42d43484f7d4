"""scripts/bench_overhead.py runs end to end at CI size: every method gives a row (a time or
"fails: ..."), gradscope's profiles never fail. No timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_overhead.py"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
ALWAYS = ["plain", "gradscope-minimal", "gradscope-standard", "gradscope-full", "torch.func",
          "gradscope-standard-every10"]
OPTIONAL = {"opacus-hooks": "opacus", "opacus-ghost": "opacus", "backpack": "backpack"}


def _expected_methods() -> list[str]:
    return ALWAYS + [m for m, module in OPTIONAL.items() if importlib.util.find_spec(module) is not None]


def test_bench_overhead_small_runs_every_method(tmp_path: Path) -> None:
    python = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [python, str(SCRIPT), "--small", "--steps", "2", "--device", "cpu", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    rows = {(r["model"], r["method"]): r for r in result["rows"]}
    for model in ("mlp", "cnn", "gpt"):
        for method in _expected_methods():
            row = rows.get((model, method))
            assert row is not None, f"no row for {model} / {method}"
            assert row["error"] or row["ms"] > 0, row
        for method in [*ALWAYS[:4], ALWAYS[5]]:
            assert not rows[(model, method)]["error"], rows[(model, method)]
            assert rows[(model, method)]["peak_mb"] >= 0  # the memory pass ran
        assert rows[(model, "gradscope-standard")]["ratio_q1"] > 0  # interleaved: paired spread
        assert rows[(model, "gradscope-standard-every10")]["every"] == 10
    assert result["machine"]["torch"] == __import__("torch").__version__
    for method in _expected_methods():
        assert method in done.stdout  # the table lists it
