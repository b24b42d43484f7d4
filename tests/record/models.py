"""Small float64 models shared by the engine tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def squared_error(output: Tensor, target: Tensor) -> Tensor:
    """Per-sample loss sum((y - t)^2) over the non-batch dims: [B]."""
    return ((output - target) ** 2).flatten(1).sum(1)


class Conv1D(nn.Module):
    """GPT-2 style Conv1D (Hugging Face): y = x W + b with W: [nx, nf]."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.2)
        self.bias = nn.Parameter(torch.randn(nf) * 0.1)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape[:-1] + (self.nf,)
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(shape)


class Gated(nn.Module):
    """An unusual module: a direct parameter used nonlinearly, plus a Linear child."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.randn(d) * 0.5)
        self.mix = nn.Parameter(torch.randn(d, d) * 0.3)
        self.inner = nn.Linear(d, d)

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(torch.tanh(x @ self.mix) * torch.sigmoid(self.scale) + x**2 * self.scale)


class Block(nn.Module):
    """Pre-norm transformer block; attention by nn.MultiheadAttention or q/k/v Linears."""

    def __init__(self, d: int, heads: int, attention: str) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.attention = attention
        if attention == "mha":
            self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        else:
            self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
            self.proj = nn.Linear(d, d)
        self.ln2 = nn.RMSNorm(d)
        self.fc = nn.Linear(d, 2 * d)
        self.out = nn.Linear(2 * d, d)

    def _attend(self, x: Tensor) -> Tensor:
        batch, tokens, d = x.shape
        mask = torch.ones(tokens, tokens, dtype=torch.bool).triu(1)
        if self.attention == "mha":
            return self.attn(x, x, x, attn_mask=mask, need_weights=False)[0]

        def split(t: Tensor) -> Tensor:
            return t.view(batch, tokens, self.heads, -1).transpose(1, 2)  # (B, nh, T, hs)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        return self.proj(y.transpose(1, 2).reshape(batch, tokens, d))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self._attend(self.ln1(x))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class TinyGPT(nn.Module):
    """Token + position embeddings, one block, final LayerNorm, head tied to wte."""

    def __init__(self, vocab: int = 11, tokens: int = 5, d: int = 8, attention: str = "mha"):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(tokens, d)
        self.block = Block(d, 2, attention)
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, ids: Tensor) -> Tensor:
        positions = torch.arange(ids.shape[1]).expand_as(ids)  # (B, T): batched ids
        x = self.wte(ids) + self.wpe(positions)
        return self.head(self.ln_f(self.block(x)))  # (B, T, V)


def lm_loss(model: nn.Module, ids: Tensor) -> Tensor:
    """Per-sample next-token cross-entropy, summed over positions: [B]."""
    logits = model(ids[:, :-1])
    losses = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
    return losses.sum(1)


class SmallCNN(nn.Module):
    """Conv2d -> GroupNorm -> grouped strided Conv2d -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.norm = nn.GroupNorm(2, 4)
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2, groups=2)
        self.fc = nn.Linear(4 * 2 * 2, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.norm(self.conv1(x)))
        return self.fc(torch.relu(self.conv2(x)).flatten(1))


def mlp() -> nn.Sequential:
    """A three-layer tanh MLP, 6 -> 8 -> 8 -> 3."""
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))


class LSTMModel(nn.Module):
    """nn.LSTM (sequence-first by default) and a Linear head on the last output."""

    def __init__(self, batch_first: bool = False) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.lstm = nn.LSTM(4, 6, batch_first=batch_first)
        self.head = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1] if self.batch_first else out[-1])
