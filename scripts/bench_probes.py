"""Recording cost of the instability probes: one small causal transformer, CPU time per step.

Configurations, each on a fresh model with the same seed, interleaved over ``--rounds``:
plain (no recorder), standard without probes, standard with probes (the default), and
standard with curvature on every step (``--curvature every=1``, ``--curvature-steps``
steps in the first round only: it is slow). Prints the median
process CPU time per step after ``--warmup`` steps and its ratio to plain. CPU time, not
wall time: a shared machine disturbs it much less. docs/performance.md, "Probes".
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from unittest import mock

import torch
from torch import nn
from torch.nn import functional as F

import gradscope
from gradscope.record import recorder as recorder_module
from gradscope.record.config import RecordConfig
from gradscope.record.probes import NoProbes


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.c_attn, self.c_proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)
        x = x + self.c_proj(y)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, layers: int, width: int, heads: int, context: int, vocab: int) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.Sequential(*(Block(width, heads) for _ in range(layers)))
        self.ln_f, self.lm_head = nn.LayerNorm(width), nn.Linear(width, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        return self.lm_head(self.ln_f(self.blocks(x)))


def measure(args: argparse.Namespace, method: str) -> list[float]:
    torch.manual_seed(0)
    model = GPT(args.layers, args.width, args.heads, args.context, args.vocab)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    data = torch.randint(0, args.vocab, (args.batch, args.context + 1))
    recorder = None
    if method != "plain":
        config = RecordConfig(curvature=1 if method == "curvature" else 0)
        off = mock.patch.object(recorder_module, "make_probes", lambda *a: NoProbes())
        with off if method == "no probes" else contextlib.nullcontext():
            recorder = gradscope.Recorder(model, optimizer, run_dir=tempfile.mkdtemp(), config=config)
        recorder.start()
    times = []
    steps = args.curvature_steps if method == "curvature" else args.steps
    for _ in range(args.warmup + steps):
        started = time.process_time()
        loss = F.cross_entropy(model(data[:, :-1]).flatten(0, 1), data[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.process_time() - started)
    if recorder is not None:
        recorder.close()
    return times[args.warmup:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    options = (("layers", 2), ("width", 128), ("heads", 4), ("context", 64), ("batch", 16), ("vocab", 512),
               ("steps", 10), ("warmup", 2), ("rounds", 2), ("curvature-steps", 2))
    for name, default in options:
        parser.add_argument(f"--{name}", type=int, default=default)
    args = parser.parse_args()
    torch.set_num_threads(1)
    methods = ("plain", "no probes", "probes", "curvature")
    results: dict[str, list[float]] = {m: [] for m in methods}
    for round_ in range(args.rounds):
        for method in methods:
            if method != "curvature" or round_ == 0:
                results[method] += measure(args, method)
    plain = statistics.median(results["plain"])
    for method in methods:
        value = statistics.median(results[method])
        print(f"{method:>10}: {1000 * value:8.1f} ms CPU per step  x{value / plain:5.2f}")


if __name__ == "__main__":
    main()
