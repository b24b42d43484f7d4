"""``gradscope record --curvature every=N``: bad values are one line and exit 2."""

import pytest

from tests.e2e.harness import gradscope


@pytest.mark.parametrize("value", ["every=0", "5", "every=x", "often=3"])
def test_bad_curvature_option_is_one_line(tmp_path, value):
    out = str(tmp_path / "run")
    proc = gradscope("record", "--curvature", value, "--out", out, "--", "python", "-c", "0")
    assert proc.returncode == 2
    assert "--curvature" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
