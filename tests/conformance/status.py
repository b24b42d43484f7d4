"""Print where the recorder stands on every idiom: one line per (idiom, check), with the
first problem. ``--v1`` first rescales format-v1 samples (stored as f c_i) back to c_i with
the step's per_sample_scale f, to tell the convention apart from wrong values.

    PYTHONPATH=$PWD python -m tests.conformance.status [--v1] [OUT_DIR] [IDIOM ...]
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd

from tests.conformance import checks
from tests.conformance.suite import IDIOMS, spawn

CHECKS = {
    "reference": checks.check_reference,
    "output": checks.check_output,
    "steps": checks.check_steps,
    "loss": checks.check_loss,
    "per-sample": checks.check_per_sample,
    "scale": checks.check_scale,
}


class V1Spawned(checks.Spawned):
    def table(self, name: str) -> pd.DataFrame:
        frame = super().table(name)
        if name != "samples" or frame.empty:
            return frame
        scale = super().table("steps").set_index("step")["per_sample_scale"]
        f = frame["step"].map(scale).to_numpy()
        return frame.assign(norm2=frame["norm2"] / f**2, weight_dot=frame["weight_dot"] / f)


def main(argv: list[str]) -> None:
    v1 = "--v1" in argv
    args = [a for a in argv if a != "--v1"]
    out = Path(args[0]) if args else Path("/tmp/gradscope-conformance")
    names = args[1:] or list(IDIOMS)
    for name in names:
        folder = out / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        run = spawn(name, folder)
        if v1:
            run = V1Spawned(run.name, run.plain, run.recorded, run.run_dir, run.normalise)
        for check, function in CHECKS.items():
            problems = function(run)
            first = problems[0].splitlines()[0][:150] if problems else ""
            verdict = "FAIL" if problems else "pass"
            print(f"{name:26} {check:10} {verdict} {len(problems):3} {first}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
