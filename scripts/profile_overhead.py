"""Where gradscope's time goes: CPU ms per step of each recorder stage (docs/performance.md).

cProfile on the training thread's CPU clock (``time.thread_time``, steadier than wall time
on a shared machine), ``--steps`` steps after ``--warmup``, one torch thread; each stage is
the cumulative time of the gradscope function that implements it. ``--einsum`` also times
every ``torch.einsum`` of the statistics by equation and shapes.

    .venv/bin/python scripts/profile_overhead.py gpt standard
    .venv/bin/python scripts/profile_overhead.py cnn minimal --steps 10
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import cProfile
import pstats
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_methods import Setup  # noqa: E402
from bench_models import workload  # noqa: E402

STAGES = {  # (file, function) -> label, in print order
    ("bench_methods.py", "step"): "whole step",
    ("recorder.py", "forward"): "forward hooks (capture)",
    ("engine.py", "_evaluate"): "backward hooks (kernels + statistics)",
    ("conv.py", "unfold_patches"): "  conv patches",
    ("conv.py", "per_sample_weight_grad"): "  conv dense per-sample gradients",
    ("engine.py", "_finish"): "  per-parameter statistics",
    ("stats.py", "materialize"): "    materialising factors",
    ("stats.py", "_factored_stats"): "    ghost norms + factored sketches",
    ("stats.py", "_dense_stats"): "    dense norms, dots, sketches",
    ("stats.py", "_weight_dot"): "    <g_i, W>",
    ("recorder.py", "backward_end"): "backward_end (collect, grad norms)",
    ("recorder.py", "step_pre"): "optimizer pre-hook (snapshot, norms, init distance)",
    ("recorder.py", "step_post"): "optimizer post-hook (update norms, emit)",
}


def stages(model: str, profile: str, steps: int, warmup: int) -> dict[str, float]:
    work = workload(model, False, None, "cpu")
    torch.manual_seed(0)
    net = work.build()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x, y = work.batch(torch.device("cpu"))
    step = Setup(net, optimizer, work).standard_step(net)
    with tempfile.TemporaryDirectory() as run_dir:
        import gradscope

        recorder = (contextlib.nullcontext() if profile == "plain"
                    else gradscope.Recorder(net, optimizer, run_dir=run_dir, profile=profile))
        with recorder:
            for _ in range(warmup):
                step(x, y)
            prof = cProfile.Profile(time.thread_time)
            prof.enable()
            for _ in range(steps):
                step(x, y)
            prof.disable()
    out: dict[str, float] = {}
    for (file, _, func), (_, _, _, cumulative, _) in pstats.Stats(prof).stats.items():  # type: ignore[attr-defined]
        label = STAGES.get((Path(file).name, func))
        if label is not None:
            out[label] = out.get(label, 0.0) + 1e3 * cumulative / steps
    return out


@contextlib.contextmanager
def einsum_timer() -> Iterator[collections.Counter[tuple]]:
    """Time each torch.einsum call of the statistics by (equation, shapes)."""
    from gradscope.record.kernels import stats

    original, totals = torch.einsum, collections.Counter()

    def timed(equation: str, *operands: torch.Tensor) -> torch.Tensor:
        started = time.thread_time()
        result = original(equation, *operands)
        totals[(equation, tuple(tuple(o.shape) for o in operands))] += time.thread_time() - started
        return result

    stats.torch.einsum = timed
    try:
        yield totals
    finally:
        stats.torch.einsum = original


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", choices=("mlp", "cnn", "gpt"))
    p.add_argument("profile", choices=("plain", "minimal", "standard", "full"))
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--einsum", action="store_true", help="also time each einsum of kernels/stats.py")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    with einsum_timer() if args.einsum else contextlib.nullcontext() as totals:
        out = stages(args.model, args.profile, args.steps, args.warmup)
    for label in STAGES.values():
        if label in out:
            print(f"{out[label]:9.2f} ms  {label}")
    for (equation, shapes), seconds in (totals.most_common(12) if totals is not None else []):
        print(f"{1e3 * seconds / (args.steps + args.warmup):9.2f} ms  einsum {equation} {shapes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
