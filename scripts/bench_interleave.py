"""Methods alternated step by step in one process (scripts/bench_overhead.py, the default).

Round r runs step r of every method, each on its own fresh model, in an order that rotates
each round, so a busy machine slows every method alike; the ratio to plain is the median
of the per-round ratios (paired), with their quartiles as the spread. gradscope's global
hooks are installed (untimed) only around its own steps, and its writer thread is let
finish (untimed) before the next method runs; the writer's CPU time is reported apart,
as a per-step average (``writer_cpu_ms``). Memory is not measured here (one process holds
every method): the benchmark measures it in fresh processes (``--isolate``).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any

import torch
from bench_methods import Method, Setup, method_step
from bench_models import Workload


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def error_text(err: BaseException) -> str:
    first = str(err).strip().splitlines()
    return f"{type(err).__name__}: {first[0] if first else ''}"[:160]


def interleaved(work: Workload, methods: list[str], device: torch.device, steps: int,
                warmup: int) -> dict[str, dict[str, Any]]:
    """Per method: wall and main-thread CPU seconds of each timed step, the writer's CPU
    seconds over them, the cadence, or the error that stopped it."""
    out: dict[str, dict[str, Any]] = {m: {"wall": [], "cpu": [], "writer": 0.0, "error": ""} for m in methods}
    with contextlib.ExitStack() as stack:
        running: dict[str, Method] = {}
        for method in methods:
            torch.manual_seed(0)
            model = work.build().to(device)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
            try:
                running[method] = stack.enter_context(method_step(method, Setup(model, optimizer, work)))
            except Exception as err:  # noqa: BLE001 - a failing method is a result
                out[method]["error"] = error_text(err)
                continue
            out[method]["every"] = running[method].every
            if running[method].hooks is not None:
                running[method].hooks.remove()
        x, y = work.batch(device)
        for i in range(warmup + steps):
            order = list(running)
            for method in order[i % len(order):] + order[: i % len(order)] if order else []:
                _one_step(running, method, out[method], x, y, device, timed=i >= warmup)
        for m in running.values():  # each recorder closes with its hooks in place
            if m.hooks is not None:
                m.hooks.install()
    return out


def _one_step(running: dict[str, Method], method: str, record: dict[str, Any], x: torch.Tensor,
              y: torch.Tensor, device: torch.device, timed: bool) -> None:
    m = running[method]
    if m.hooks is not None:
        m.hooks.install()
    try:
        sync(device)
        started, started_cpu = time.perf_counter(), time.thread_time()
        m.step(x, y)
        sync(device)
        wall, cpu = time.perf_counter() - started, time.thread_time() - started_cpu
    except Exception as err:  # noqa: BLE001
        record["error"] = error_text(err)
        del running[method]
        return
    finally:
        if m.hooks is not None:
            m.hooks.remove()
    writer = _writer_cpu(m)
    if timed:
        record["wall"].append(wall)
        record["cpu"].append(cpu)
        record["writer"] += writer


def _writer_cpu(m: Method) -> float:
    """Let gradscope's writer thread finish what the step queued; its CPU seconds meanwhile."""
    writer = getattr(getattr(m.hooks, "_callbacks", None), "_writer", None)
    thread = getattr(writer, "_thread", None)
    if thread is None or not thread.is_alive() or not hasattr(time, "pthread_getcpuclockid"):
        return 0.0
    try:  # a sandbox (gVisor) may refuse per-thread clocks: then wait on the queue alone
        clock = time.pthread_getcpuclockid(thread.ident)
        first = last = time.clock_gettime(clock)
    except OSError:
        clock = None
        first = last = 0.0
    deadline = time.perf_counter() + 2.0
    while time.perf_counter() < deadline:
        time.sleep(0.002)
        now = time.clock_gettime(clock) if clock is not None else last
        if writer._queue.qsize() == 0 and (clock is None or now - last < 5e-5):
            break
        last = now
    return last - first


def paired(values: list[float], base: list[float]) -> tuple[float, float, float]:
    """Median and quartiles of the per-round ratios values[r] / base[r]."""
    ratios = sorted(v / b for v, b in zip(values, base) if b > 0)
    if len(ratios) < 2:
        return (ratios[0],) * 3 if ratios else (float("nan"),) * 3
    q = statistics.quantiles(ratios, n=4, method="inclusive")
    return statistics.median(ratios), q[0], q[2]
