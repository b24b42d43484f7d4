"""Recording overhead: gradscope's profiles against the plain step and the anchors.

For each (model, method): the median time of one training step (zero_grad, forward, backward,
optimizer step; CUDA synchronised) over ``--steps`` steps after ``--warmup`` steps, its ratio
to the plain step, and the peak memory of those steps. Times come from one process with the
methods alternated step by step (``scripts/bench_interleave.py``; ``--no-interleave``: each
pair timed on its own), memory from a second pass of ``--memory-steps`` steps per pair.
Methods whose package is not importable are left out; a method that raises is reported as
"fails: <one line>" and the benchmark goes on. Results: docs/performance.md, section
"Recording overhead".

    .venv/bin/python scripts/bench_overhead.py                       # full shapes, CPU
    .venv/bin/python scripts/bench_overhead.py --device cuda --json bench.json
    .venv/bin/python scripts/bench_overhead.py --small --steps 2     # CI-size smoke run
    scripts/gpu_bench.sh                                             # the GPU session, one command

The GPT is the reduced one on CPU (4 x 128, T 128, B 8, V 4096) and the anchors' 41M one on
CUDA (4 x 768, T 512, B 16, V 16384), unless ``--gpt`` says otherwise.

Memory. CUDA: ``torch.cuda.max_memory_allocated`` over the timed steps (peak tensor memory,
model included). CPU: the resident-set high-water mark over the steps, reset before them
through /proc/self/clear_refs where Linux allows it (else ``resource.getrusage`` ru_maxrss,
a process-lifetime peak), minus the RSS before them (psutil if installed, else
/proc/self/status), plus the bytes of the parameters and the batch, so that CPU and CUDA
figures count the same things. glibc keeps freed memory, so CPU figures are only clean with
each pair in a fresh process: ``--isolate``, the default unless ``--small``.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_interleave import error_text, interleaved, paired, sync  # noqa: E402
from bench_methods import GRADSCOPE, METHODS, OPTIONAL, Setup, method_step  # noqa: E402
from bench_models import GPTShape, Workload, workload  # noqa: E402

MODELS = ("mlp", "cnn", "gpt")


# measurement ---------------------------------------------------------------------------


@dataclass
class Row:
    model: str
    shape: str
    method: str
    ms: float = math.nan  # median time per step
    ms_min: float = math.nan
    # median CPU time per step: all threads (--isolate), or the training thread (interleaved)
    cpu_ms: float = math.nan
    cpu_ratio: float = math.nan  # cpu_ms / plain cpu_ms (interleaved: median of per-round ratios)
    ratio: float = math.nan  # ms / plain ms (interleaved: median of the per-round ratios)
    ratio_q1: float = math.nan  # interleaved: quartiles of the per-round ratios (the spread)
    ratio_q3: float = math.nan
    peak_mb: float = math.nan
    mem_ratio: float = math.nan  # peak_mb / plain peak_mb
    writer_cpu_ms: float = math.nan  # interleaved: gradscope's writer thread, CPU ms per step
    every: int = 1  # gradscope's cadence; with every > 1, the medians of both kinds of step:
    ms_recorded: float = math.nan
    ms_unrecorded: float = math.nan
    error: str = ""


class CpuMemory:
    """Peak RSS over a span: high-water mark (reset when Linux allows) minus the RSS before."""

    def __init__(self) -> None:
        try:
            import psutil

            self._process = psutil.Process()
            self.current_source = "psutil"
        except ImportError:
            self._process = None
            self.current_source = "/proc/self/status" if Path("/proc/self/status").exists() else "ru_maxrss"
        self.resettable = _reset_hwm()
        self.peak_source = "VmHWM after clear_refs" if self.resettable else "resource ru_maxrss"

    def current(self) -> int:
        if self._process is not None:
            return int(self._process.memory_info().rss)
        status = _proc_status()
        return status.get("VmRSS", _ru_maxrss())

    def start(self) -> None:
        _reset_hwm()
        self._before = self.current()

    def peak_delta(self) -> int:
        peak = _proc_status().get("VmHWM") if self.resettable else None
        return max(0, (peak if peak is not None else _ru_maxrss()) - self._before)


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return "VmHWM" in _proc_status()
    except OSError:
        return False


def _proc_status() -> dict[str, int]:
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(rest.split()[0]) * 1024
    return out


def _ru_maxrss() -> int:
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def measure(work: Workload, method: str, device: torch.device, steps: int, warmup: int) -> Row:
    """Time one (model, method) pair; every method gets the same fresh model and batch."""
    row = Row(work.name, work.label, method)
    torch.manual_seed(0)
    model = work.build().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = work.batch(device)
    resident = _bytes(model.parameters()) + _bytes(model.buffers()) + _bytes([x, y])
    memory = CpuMemory() if device.type == "cpu" else None
    _preload(method)  # imports (pyarrow for gradscope, scipy for Opacus) are not step memory
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    else:
        memory.start()
    times, cpu = [], []
    try:
        with method_step(method, Setup(model, optimizer, work)) as m:
            for i in range(warmup + steps):
                sync(device)
                started, started_cpu = time.perf_counter(), time.process_time()
                m.step(x, y)
                sync(device)
                if i >= warmup:
                    times.append(time.perf_counter() - started)
                    cpu.append(time.process_time() - started_cpu)
    except Exception as err:  # noqa: BLE001 - a failing method is a result, not a crash
        row.error = error_text(err)
        return row
    row.ms, row.ms_min = 1e3 * statistics.median(times), 1e3 * min(times)
    row.cpu_ms = 1e3 * statistics.median(cpu)
    if device.type == "cuda":
        row.peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        row.peak_mb = (memory.peak_delta() + resident) / 2**20
    return row


def _preload(method: str) -> None:
    if method in GRADSCOPE:
        import gradscope.record.recorder  # noqa: F401
    elif method.startswith("opacus-"):
        import opacus  # noqa: F401
    elif method == "backpack":
        import backpack  # noqa: F401


def available(method: str) -> bool:
    module = OPTIONAL.get(method)
    if module is None:
        return True
    try:
        __import__(module)
    except Exception:  # noqa: BLE001 - a broken optional install counts as absent
        return False
    return True


def _isolated(args: argparse.Namespace, model: str, method: str, steps: int) -> Row:
    """Run one pair in a fresh interpreter, so CPU peaks are not hidden by freed memory."""
    command = [sys.executable, __file__, "--device", args.device, "--steps", str(steps),
               "--warmup", str(args.warmup), "--models", model, "--methods", method, "--no-isolate",
               "--no-interleave", "--quiet", "--json", "-"]
    if args.threads is not None:
        command += ["--threads", str(args.threads)]
    if args.small:
        command.append("--small")
    if args.gpt is not None:
        command += ["--gpt", ",".join(str(v) for v in asdict(args.gpt).values())]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        return Row(**json.loads(done.stdout)["rows"][0])
    except (ValueError, KeyError, IndexError, TypeError):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return Row(model, model, method, error=f"subprocess exit {done.returncode}: {tail}"[:160])


def _take_times(row: Row, timed: dict[str, Any], plain: dict[str, Any] | None, warmup: int) -> None:
    """Times from the interleaved run (the memory pass keeps only its peak memory)."""
    row.error = row.error or timed["error"]
    wall, cpu = timed["wall"], timed["cpu"]
    if row.error or not wall:
        row.error = row.error or "no timed step"
        return
    row.ms, row.ms_min = 1e3 * statistics.median(wall), 1e3 * min(wall)
    row.cpu_ms = 1e3 * statistics.median(cpu)
    row.writer_cpu_ms = 1e3 * timed["writer"] / len(wall)
    row.every = every = timed.get("every", 1)
    if every > 1:
        recorded = [w for i, w in enumerate(wall) if (i + warmup) % every == 0]
        unrecorded = [w for i, w in enumerate(wall) if (i + warmup) % every != 0]
        row.ms_recorded = 1e3 * statistics.median(recorded) if recorded else math.nan
        row.ms_unrecorded = 1e3 * statistics.median(unrecorded) if unrecorded else math.nan
    if plain is not None and not plain["error"] and len(plain["wall"]) == len(wall):
        row.ratio, row.ratio_q1, row.ratio_q3 = paired(wall, plain["wall"])
        row.cpu_ratio = paired(cpu, plain["cpu"])[0]
    else:
        row.ratio = row.cpu_ratio = math.nan


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["memory"] = "torch.cuda.max_memory_allocated over the timed steps"
    else:
        cpu = CpuMemory()
        info["memory"] = (f"peak RSS over the steps ({cpu.peak_source}) - RSS before ({cpu.current_source})"
                          " + parameter and batch bytes")
    for name in ("opacus", "backpack"):
        try:
            info[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001
            info[name] = None
    return info


# output --------------------------------------------------------------------------------


def table(rows: list[Row], info: dict[str, Any], steps: int) -> Any:
    from rich.table import Table

    out = Table(title=f"Recording overhead: median of {steps} steps on {info.get('gpu', info['device'])}, "
                      f"torch {info['torch']}", caption=f"memory: {info['memory']}")
    for name in ("model", "method", "ms/step", "x plain", "spread", "cpu ms", "cpu x plain", "peak MB",
                 "mem x plain", "note"):
        left = name in ("model", "method", "note")
        out.add_column(name, justify="left" if left else "right", no_wrap=name != "note")
    last = None
    for r in rows:
        model = r.shape if r.model != last else ""
        last = r.model
        if r.error:
            out.add_row(model, r.method, "", "", "", "", "", "", "", f"fails: {r.error}")
            continue
        spread = "" if math.isnan(r.ratio_q1) else f"{r.ratio_q1:.2f}-{r.ratio_q3:.2f}"
        note = []
        if r.every > 1:
            note.append(f"recorded {r.ms_recorded:.1f} ms, unrecorded {r.ms_unrecorded:.1f} ms")
        if r.writer_cpu_ms > 0:
            note.append(f"writer {r.writer_cpu_ms:.1f} cpu ms")
        out.add_row(model, r.method, f"{r.ms:.1f}", f"{r.ratio:.2f}x", spread, f"{r.cpu_ms:.1f}",
                    f"{r.cpu_ratio:.2f}x", f"{r.peak_mb:.0f}", f"{r.mem_ratio:.2f}x", "; ".join(note))
    return out


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma list of {', '.join(MODELS)}")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma list of {', '.join(METHODS)}")
    p.add_argument("--steps", type=int, default=20, help="timed steps per pair (median reported)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3, 1 with --small)")
    p.add_argument("--small", action="store_true", help="CI-size shapes for every model")
    p.add_argument("--gpt", type=GPTShape.parse, default=None,
                   help="GPT shape L,D,T,B[,V] (default 4,768,512,16,16384; heads = D/64)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's own, 1 with --small: CI shares its cores)")
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                   help="each pair in a fresh process (default: on, off with --small)")
    p.add_argument("--interleave", action=argparse.BooleanOptionalAction, default=True,
                   help="times from one process with the methods alternated step by step (default);"
                        " memory from a second pass of --memory-steps steps per pair")
    p.add_argument("--memory-steps", type=int, default=None,
                   help="steps of the memory pass with --interleave (default 3, 1 with --small)")
    p.add_argument("--json", metavar="OUT", help="write rows and machine info as JSON ('-' for stdout)")
    p.add_argument("--quiet", action="store_true", help="no table")
    args = p.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.methods = [m for m in args.methods.split(",") if m]
    for value, known, what in ((args.models, MODELS, "model"), (args.methods, METHODS, "method")):
        unknown = sorted(set(value) - set(known))
        if unknown:
            p.error(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(known)}")
    if args.steps < 1:
        p.error("--steps must be at least 1")
    if args.warmup is None:
        args.warmup = 1 if args.small else 3
    if args.memory_steps is None:
        args.memory_steps = 1 if args.small else 3
    if args.memory_steps < 1:
        p.error("--memory-steps must be at least 1")
    if args.threads is None and args.small:
        args.threads = 1
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be at least 1")
    if args.isolate is None:
        args.isolate = not args.small
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device visible to torch")
    return args


def _model_rows(args: argparse.Namespace, model: str, methods: list[str], device: torch.device) -> list[Row]:
    """Every method's row on one model: times (interleaved or per pair), then memory."""
    work = workload(model, args.small, args.gpt, args.device)
    rows: list[Row] = []
    timed = interleaved(work, methods, device, args.steps, args.warmup) if args.interleave else {}
    base: Row | None = None
    for method in methods:
        steps = min(args.steps, args.memory_steps) if args.interleave else args.steps
        row = _isolated(args, model, method, steps) if args.isolate else measure(
            work, method, device, steps, args.warmup)
        row.shape = work.label
        if method == "plain":
            base = row
        if base is not None and not base.error and not row.error:
            row.ratio, row.mem_ratio = row.ms / base.ms, row.peak_mb / base.peak_mb
            row.cpu_ratio = row.cpu_ms / base.cpu_ms
        if timed:
            _take_times(row, timed[method], timed.get("plain"), args.warmup)
        rows.append(row)
        if not args.quiet:
            status = f"fails: {row.error}" if row.error else f"{row.ms:.1f} ms, {row.peak_mb:.0f} MB"
            print(f"  {work.label:<40} {method:<28} {status}", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    methods = [m for m in args.methods if available(m)]
    skipped = sorted(set(args.methods) - set(methods))
    rows = [row for model in args.models for row in _model_rows(args, model, methods, device)]
    info = machine(device)
    info["not_installed"] = skipped
    if not args.quiet:
        from rich.console import Console

        console = Console()
        if not console.is_terminal:
            console = Console(width=200)
        console.print(table(rows, info, args.steps))
        if skipped:
            print(f"not installed, left out: {', '.join(skipped)}")
    if args.json:
        payload = json.dumps({"machine": info, "steps": args.steps, "warmup": args.warmup,
                              "rows": [asdict(r) for r in rows]}, indent=1)
        if args.json == "-":
            print(payload)
        else:
            Path(args.json).write_text(payload + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
