"""Packaging (issue 17): the analysis side never imports torch; a built wheel carries the
configs and the LICENSE, and `gradscope check RUN --config default` works from it."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.report.conftest import REPO

NO_TORCH = '''
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch' (blocked)", name="torch")
sys.meta_path.insert(0, NoTorch())
sys.argv = ["gradscope", *sys.argv[1:]]
from gradscope.cli import main
main()
'''


def without_torch(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "100"}
    return subprocess.run([sys.executable, "-c", NO_TORCH, *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_analysis_never_imports_torch(synthetic_run: Path, calm_run: Path, tmp_path: Path) -> None:
    for args in (["report", str(synthetic_run)], ["metrics", str(synthetic_run), "-f", "noise"],
                 ["check", str(synthetic_run), "--config", "default"],
                 ["compare", str(synthetic_run), str(calm_run), "--html", str(tmp_path / "c.html")]):
        done = without_torch(*args)
        assert done.returncode in (0, 1), (args, done.stderr[-500:])
        assert "torch" not in done.stderr


def test_record_without_torch_is_one_line() -> None:
    done = without_torch("record", "--", "python", "train.py")
    assert done.returncode == 2
    assert done.stderr.strip() == ("gradscope: error: gradscope record needs PyTorch, which this Python "
                                   "cannot import: pip install 'gradscope[record]'")
    script = NO_TORCH.split("sys.argv")[0] + "import gradscope\ngradscope.Recorder"
    api = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True)
    assert "gradscope.Recorder needs PyTorch: pip install 'gradscope[record]'" in api.stderr


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_checks_with_the_shipped_config(synthetic_run: Path, tmp_path: Path) -> None:
    """Must show (issue 17): build the wheel, install it (no deps: they come from the
    current environment through --system-site-packages) and gate a run from elsewhere."""
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--wheel-dir", str(wheels), str(REPO)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("gradscope-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"gradscope/configs/default.toml", "gradscope/configs/strict.toml"} <= set(names)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    assert b"License-Expression: Apache-2.0" in metadata and b"Requires-Dist: torch" in metadata
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=300)
    # The dependencies: this environment's site-packages, after the venv's own (a .pth line;
    # .pth files found there, such as an editable gradscope's, are not run).
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--ignore-installed", "--quiet",
                          str(wheel)], capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command = [str(venv / "bin" / "gradscope"), "check", str(synthetic_run), "--config", "default"]
    done = subprocess.run(command, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1), done.stderr
    assert "nonfinite" in done.stdout
    where = subprocess.run([str(python), "-c", "import gradscope; print(gradscope.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True)
    assert where.stdout.startswith(str(venv))  # the installed copy, not the checkout
