"""kill -9 of the training process and of ``gradscope record`` at random steps; prints a table.

    PYTHONPATH=$PWD python scripts/fault_kills.py --tries 50

For each try: start ``gradscope record`` on tests/fault/train_loop.py, wait for a random
step (1-120), SIGKILL the target, then check what a user would: the run's status, that
``gradscope report`` works, that no training process is left running, which temporary
files remain, and how many printed steps the steps table lacks.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fault import harness  # noqa: E402

TARGETS = ("training process", "gradscope record")


def one_try(target: str, step: int, root: Path) -> dict[str, object]:
    run = root / f"{target}-{step}"
    shutil.rmtree(run, ignore_errors=True)
    recording = harness.start(run, "--steps", "100000", "--sleep", "0.01")
    recording.wait_for_step(step)
    harness.kill(recording.child_pid if target == "training process" else recording.proc.pid)
    recording.finish()
    gone = harness.wait_gone(recording.child_pid)
    meta = harness.meta(run)
    expected = ("crashed", "SIGKILL") if target == "training process" else ("interrupted", "SIGTERM")
    report = harness.gradscope("report", str(run), "--no-color")
    result = {
        "status": (meta.get("status"), meta.get("signal")) == expected,
        "report": report.returncode == 0 and "Traceback" not in report.stderr,
        "orphan": not gone,
        "temp": len(harness.leftovers(run)),
        "lost": recording.last_step() + 1 - harness.rows(run, "steps"),
    }
    shutil.rmtree(run, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=50, help="kills per target")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=TARGETS, help="kill only this target")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="gradscope-kills-"))
    print("| killed | tries | status right | report works | orphans | temp files left (tries) "
          "| printed steps not saved: median, max |")
    print("|---|---|---|---|---|---|---|")
    for target in [args.only] if args.only else TARGETS:
        results = [one_try(target, rng.randint(1, 120), root) for _ in range(args.tries)]
        lost = [int(r["lost"]) for r in results]
        print(f"| {target} | {len(results)} | {sum(bool(r['status']) for r in results)} "
              f"| {sum(bool(r['report']) for r in results)} | {sum(bool(r['orphan']) for r in results)} "
              f"| {sum(1 for r in results if r['temp'])} | {statistics.median(lost):g}, {max(lost)} |",
              flush=True)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
