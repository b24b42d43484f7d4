"""The benchmark's workloads: MLP, CNN and a nanoGPT-style transformer (scripts/bench_overhead.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


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


GPT_SMALL = GPTShape(layers=2, width=64, seq=32, batch=4, vocab=512)  # --small (CI)
# the reduced GPT, the default on CPU: 4 layers, width 128, sequence 128, batch 8, 4096 tokens
GPT_CPU = GPTShape(layers=4, width=128, seq=128, batch=8, vocab=4096)


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


def workload(name: str, small: bool, gpt: GPTShape | None, device: str = "cpu") -> Workload:
    """A named workload; the GPT is ``gpt``, else CI-size with ``small``, else the reduced
    GPT on CPU and the anchors' 41M one on CUDA."""
    if name == "mlp":
        return _mlp(small)
    if name == "cnn":
        return _cnn(small)
    return _gpt(gpt or (GPT_SMALL if small else GPT_CPU if device == "cpu" else GPTShape()))
