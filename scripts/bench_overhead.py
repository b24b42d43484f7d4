"""Recording overhead: gradscope's profiles against the plain step and the anchors.

For each (model, method): the median time of one training step (zero_grad, forward, backward,
optimizer step; CUDA synchronised) over ``--steps`` steps after ``--warmup`` steps, its ratio
to the plain step, and the peak memory of those steps. Methods whose package is not
importable are left out; a method that raises is reported as "fails: <one line>" and the
benchmark goes on. Results: docs/performance.md, section "Recording overhead".

    .venv/bin/python scripts/bench_overhead.py                       # full shapes, CPU
    .venv/bin/python scripts/bench_overhead.py --device cuda --json bench.json
    .venv/bin/python scripts/bench_overhead.py --small --steps 2     # CI-size smoke run

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
import contextlib
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MODELS = ("mlp", "cnn", "gpt")
METHODS = (
    "plain",
    "gradscope-minimal",
    "gradscope-standard",
    "gradscope-full",
    "opacus-hooks",
    "opacus-ghost",
    "torch.func",
    "backpack",
)
OPTIONAL = {"opacus-hooks": "opacus", "opacus-ghost": "opacus", "backpack": "backpack"}


# models ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GPTShape:
    layers: int = 4
    width: int = 768
    seq: int = 512
    batch: int = 16
    vocab: int = 16384  # with 4 x 768 and seq 512: 41M parameters, the anchors' GPT (DESIGN.md 7)

    @property
    def heads(self) -> int:
        return max(1, self.width // 64)

    def label(self) -> str:
        return f"GPT L{self.layers} d{self.width} T{self.seq} B{self.batch} V{self.vocab}"

    @classmethod
    def parse(cls, text: str) -> GPTShape:
        """'L,D,T,B' or 'L,D,T,B,V', e.g. '4,256,256,8,8192'."""
        values = [int(v) for v in text.split(",")]
        if len(values) not in (4, 5) or min(values) < 1:
            raise argparse.ArgumentTypeError(f"--gpt wants L,D,T,B[,V] (positive), not {text!r}")
        return cls(*values)


GPT_SMALL = GPTShape(layers=2, width=64, seq=32, batch=4, vocab=512)


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.proj(y)


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln2 = nn.LayerNorm(width)
        self.fc = nn.Linear(width, 4 * width)
        self.out = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """nanoGPT-style: learned positions, pre-LayerNorm blocks, head tied to the embedding."""

    def __init__(self, shape: GPTShape) -> None:
        super().__init__()
        self.wte = nn.Embedding(shape.vocab, shape.width)
        self.wpe = nn.Embedding(shape.seq, shape.width)
        self.blocks = nn.ModuleList(Block(shape.width, shape.heads) for _ in range(shape.layers))
        self.ln_f = nn.LayerNorm(shape.width)
        self.head = nn.Linear(shape.width, shape.vocab, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        # batched position ids, so per-sample methods see wpe per sample (per-sample-engine.md)
        pos = torch.arange(idx.shape[-1], device=idx.device).expand_as(idx)
        x = self.wte(idx) + self.wpe(pos)  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))  # (B, T, V)


@dataclass
class Workload:
    name: str
    label: str
    build: Callable[[], nn.Module]
    batch: Callable[[torch.device], tuple[torch.Tensor, torch.Tensor]]
    # logits -> the loss input: [B, C] or [B, C, T] (the form BackPACK's extended loss accepts)
    to_loss_input: Callable[[torch.Tensor], torch.Tensor] = lambda out: out


def _mlp(small: bool) -> Workload:
    hidden, batch = (64, 16) if small else (512, 256)

    def build() -> nn.Module:
        return nn.Sequential(
            nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10)
        )

    def data(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(1)
        return (torch.randn(batch, 784, generator=g).to(device),
                torch.randint(0, 10, (batch,), generator=g).to(device))

    return Workload("mlp", f"MLP 784-{hidden}-{hidden}-10 B{batch}", build, data)


def _cnn(small: bool) -> Workload:
    c1, c2, batch = (4, 8, 8) if small else (32, 64, 128)

    def build() -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, c1, 14, 14)
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, c2, 7, 7)
            nn.Flatten(), nn.Linear(c2 * 7 * 7, 10),
        )

    def data(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(1)
        return (torch.randn(batch, 1, 28, 28, generator=g).to(device),
                torch.randint(0, 10, (batch,), generator=g).to(device))

    return Workload("cnn", f"CNN conv{c1}-conv{c2}-linear 28x28 B{batch}", build, data)


def _gpt(shape: GPTShape) -> Workload:
    def data(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(1)
        tokens = torch.randint(0, shape.vocab, (shape.batch, shape.seq + 1), generator=g).to(device)
        return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()

    return Workload("gpt", shape.label(), lambda: GPT(shape), data, lambda out: out.transpose(1, 2))


def workload(name: str, small: bool, gpt: GPTShape | None) -> Workload:
    if name == "mlp":
        return _mlp(small)
    if name == "cnn":
        return _cnn(small)
    return _gpt(gpt or (GPT_SMALL if small else GPTShape()))


# methods: each gives a step function and owns what it installs -------------------------

Step = Callable[[torch.Tensor, torch.Tensor], None]


@dataclass
class Setup:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    work: Workload
    loss: nn.Module = field(default_factory=nn.CrossEntropyLoss)

    def standard_step(self, forward: nn.Module, backward: Callable[[torch.Tensor], None] | None = None,
                      after: Callable[[], Any] | None = None) -> Step:
        def step(x: torch.Tensor, y: torch.Tensor) -> None:
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss(self.work.to_loss_input(forward(x)), y)
            if backward is None:
                loss.backward()
            else:
                backward(loss)
            if after is not None:
                after()
            self.optimizer.step()

        return step


def _norms_of(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Per-sample L2 norm over several [B, ...] tensors."""
    return torch.stack([t.flatten(1).pow(2).sum(1) for t in tensors]).sum(0).sqrt()


@contextlib.contextmanager
def method_step(method: str, s: Setup) -> Iterator[Step]:
    if method == "plain":
        yield s.standard_step(s.model)
    elif method.startswith("gradscope-"):
        import gradscope

        with tempfile.TemporaryDirectory(prefix="bench-gradscope-") as run_dir:
            profile = method.split("-", 1)[1]
            with gradscope.Recorder(s.model, s.optimizer, run_dir=run_dir, profile=profile, every=1):
                yield s.standard_step(s.model)
    elif method == "opacus-hooks":
        from opacus import GradSampleModule

        gsm = GradSampleModule(s.model, batch_first=True, loss_reduction="mean")
        params = [p for p in s.model.parameters() if p.requires_grad]

        def norms() -> torch.Tensor:
            value = _norms_of([p.grad_sample for p in params])
            for p in params:
                p.grad_sample = None
            return value

        try:
            yield s.standard_step(gsm, after=norms)
        finally:
            gsm._close()
    elif method == "opacus-ghost":
        from opacus.grad_sample import GradSampleModuleFastGradientClipping

        gsm = GradSampleModuleFastGradientClipping(
            s.model, batch_first=True, loss_reduction="mean", max_grad_norm=1.0, use_ghost_clipping=True
        )
        try:
            yield s.standard_step(gsm, after=gsm.get_norm_sample)
        finally:
            gsm._close()
    elif method == "torch.func":
        yield _torch_func_step(s)
    elif method == "backpack":
        yield _backpack_step(s)
    else:
        raise ValueError(f"unknown method {method!r}")


def _torch_func_step(s: Setup) -> Step:
    """vmap(grad) per-sample gradients; their mean is the batch gradient of the mean loss."""
    from torch.func import functional_call, grad, vmap

    params = dict(s.model.named_parameters())  # a tied weight once; functional_call re-ties it

    def sample_loss(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = functional_call(s.model, p, (x.unsqueeze(0),))
        return s.loss(s.work.to_loss_input(out), y.unsqueeze(0))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        s.optimizer.zero_grad(set_to_none=True)
        grads = per_sample({k: v.detach() for k, v in params.items()}, x, y)
        _norms_of(list(grads.values()))
        for name, g in grads.items():
            params[name].grad = g.mean(0)
        s.optimizer.step()

    return step


def _backpack_step(s: Setup) -> Step:
    from backpack import backpack, extend
    from backpack.extensions import BatchL2Grad

    model, loss = extend(s.model), extend(nn.CrossEntropyLoss())
    params = [p for p in model.parameters() if p.requires_grad]
    names = {id(p): n for n, p in model.named_parameters()}

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        s.optimizer.zero_grad(set_to_none=True)
        value = loss(s.work.to_loss_input(model(x)), y)
        with backpack(BatchL2Grad()):
            value.backward()
        missing = [names[id(p)] for p in params if getattr(p, "batch_l2", None) is None]
        if missing:  # BackPACK skips modules it has no rule for: say so rather than under-count
            owners = sorted({type(m).__name__ for m in model.modules()
                             if any(names.get(id(p)) in missing for p in m.parameters(recurse=False))})
            raise RuntimeError(f"no BatchL2Grad for {', '.join(owners)} ({len(missing)} parameters)")
        torch.stack([p.batch_l2 for p in params]).sum(0).sqrt()
        for p in params:
            del p.batch_l2
        s.optimizer.step()

    return step


# measurement ---------------------------------------------------------------------------


@dataclass
class Row:
    model: str
    shape: str
    method: str
    ms: float = math.nan  # median time per step
    ms_min: float = math.nan
    cpu_ms: float = math.nan  # median process CPU time per step (all threads): robust to a busy machine
    cpu_ratio: float = math.nan  # cpu_ms / plain cpu_ms
    ratio: float = math.nan  # ms / plain ms
    peak_mb: float = math.nan
    mem_ratio: float = math.nan  # peak_mb / plain peak_mb
    error: str = ""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
        with method_step(method, Setup(model, optimizer, work)) as step:
            for i in range(warmup + steps):
                _sync(device)
                started, started_cpu = time.perf_counter(), time.process_time()
                step(x, y)
                _sync(device)
                if i >= warmup:
                    times.append(time.perf_counter() - started)
                    cpu.append(time.process_time() - started_cpu)
    except Exception as err:  # noqa: BLE001 - a failing method is a result, not a crash
        row.error = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        row.error = row.error[:160]
        return row
    row.ms, row.ms_min = 1e3 * statistics.median(times), 1e3 * min(times)
    row.cpu_ms = 1e3 * statistics.median(cpu)
    if device.type == "cuda":
        row.peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        row.peak_mb = (memory.peak_delta() + resident) / 2**20
    return row


def _preload(method: str) -> None:
    if method.startswith("gradscope-"):
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


def _isolated(args: argparse.Namespace, model: str, method: str) -> Row:
    """Run one pair in a fresh interpreter, so CPU peaks are not hidden by freed memory."""
    command = [sys.executable, __file__, "--device", args.device, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--models", model, "--methods", method, "--no-isolate",
               "--quiet", "--json", "-"]
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
    for name in ("model", "method", "ms/step", "x plain", "cpu ms", "cpu x plain", "peak MB", "mem x plain",
                 "note"):
        left = name in ("model", "method", "note")
        out.add_column(name, justify="left" if left else "right", no_wrap=name != "note")
    last = None
    for r in rows:
        model = r.shape if r.model != last else ""
        last = r.model
        if r.error:
            out.add_row(model, r.method, "", "", "", "", "", "", f"fails: {r.error}")
        else:
            out.add_row(model, r.method, f"{r.ms:.1f}", f"{r.ratio:.2f}x", f"{r.cpu_ms:.1f}",
                        f"{r.cpu_ratio:.2f}x", f"{r.peak_mb:.0f}", f"{r.mem_ratio:.2f}x", "")
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
    if args.threads is None and args.small:
        args.threads = 1
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be at least 1")
    if args.isolate is None:
        args.isolate = not args.small
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device visible to torch")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    methods = [m for m in args.methods if available(m)]
    skipped = sorted(set(args.methods) - set(methods))
    rows: list[Row] = []
    for model in args.models:
        work = workload(model, args.small, args.gpt)
        base: Row | None = None
        for method in methods:
            row = _isolated(args, model, method) if args.isolate else measure(
                work, method, device, args.steps, args.warmup)
            row.shape = work.label
            if method == "plain":
                base = row
            if base is not None and not base.error and not row.error:
                row.ratio, row.mem_ratio = row.ms / base.ms, row.peak_mb / base.peak_mb
                row.cpu_ratio = row.cpu_ms / base.cpu_ms
            rows.append(row)
            if not args.quiet:
                status = f"fails: {row.error}" if row.error else f"{row.ms:.1f} ms, {row.peak_mb:.0f} MB"
                print(f"  {work.label:<40} {method:<20} {status}", file=sys.stderr, flush=True)
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
