"""Host synchronisations in one training step on CUDA, plain against gradscope's profiles.

Two independent counts over ``--steps`` steps after ``--warmup`` (scripts/gpu_bench.sh):

- ``torch.cuda.set_sync_debug_mode("warn")``: every synchronising call (``.item()``, a
  blocking device-to-host copy, ``nonzero`` ...) warns; each is listed with the Python
  line that made it, so a gradscope line in the hot path shows by name.
- ``torch.profiler`` (CPU + CUDA activity): the CUDA runtime calls that block the host
  (``cudaStreamSynchronize``, ``cudaDeviceSynchronize``, ``cudaEventSynchronize``, plain
  ``cudaMemcpy``) and ``aten::_local_scalar_dense`` (``.item()``).

The target (issue 16): gradscope-standard adds none to the plain step.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_methods import Setup, method_step  # noqa: E402
from bench_models import GPTShape, workload  # noqa: E402

BLOCKING = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy",
            "aten::_local_scalar_dense")


def count(method: str, model: str, gpt: GPTShape | None, steps: int, warmup: int) -> dict[str, Any]:
    work = workload(model, False, gpt, "cuda")
    torch.manual_seed(0)
    net = work.build().cuda()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x, y = work.batch(torch.device("cuda"))
    with method_step(method, Setup(net, optimizer, work)) as m:
        for _ in range(warmup):
            m.step(x, y)
        torch.cuda.synchronize()
        lines: collections.Counter[str] = collections.Counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                for _ in range(steps):
                    m.step(x, y)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        for w in caught:
            if "synchroniz" in str(w.message).lower():
                lines[f"{Path(w.filename).name}:{w.lineno}"] += 1
        torch.cuda.synchronize()
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                m.step(x, y)
            torch.cuda.synchronize()  # one, ours: subtracted below
    events: collections.Counter[str] = collections.Counter()
    for e in prof.key_averages():
        if e.key in BLOCKING or e.key.startswith("cudaMemcpy") and "Async" not in e.key:
            events[e.key] += e.count
    events["cudaDeviceSynchronize"] -= 1
    return {"method": method, "model": work.label, "steps": steps,
            "sync_warnings": sum(lines.values()), "sync_lines": dict(lines.most_common(20)),
            "profiler_blocking_calls": {k: v for k, v in events.items() if v}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="gpt")
    p.add_argument("--methods", default="plain,gradscope-minimal,gradscope-standard")
    p.add_argument("--gpt", type=GPTShape.parse, default=None, help="L,D,T,B[,V] (default: the 41M GPT)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", metavar="OUT")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        p.error("no CUDA device visible to torch")
    results = []
    for model in args.models.split(","):
        for method in args.methods.split(","):
            try:
                r = count(method, model, args.gpt, args.steps, args.warmup)
            except Exception as err:  # noqa: BLE001 - a failing method is a result
                r = {"method": method, "model": model, "error": f"{type(err).__name__}: {err}"[:200]}
            results.append(r)
            print(json.dumps(r), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
