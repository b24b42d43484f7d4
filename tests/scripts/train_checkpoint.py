"""Activation checkpointing of transformer-ish blocks, as HF's gradient_checkpointing does."""

import argparse

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.ln = nn.LayerNorm(width)
        self.fc = nn.Linear(width, 4 * width)
        self.proj = nn.Linear(4 * width, width)

    def forward(self, x):
        return x + self.proj(F.gelu(self.fc(self.ln(x))))


class Net(nn.Module):
    def __init__(self, reentrant=None):
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.blocks = nn.ModuleList([Block(16), Block(16)])
        self.head = nn.Linear(16, 3)
        self.reentrant = reentrant  # None: no checkpointing

    def forward(self, x):
        x = self.embed(x)
        for block in self.blocks:
            if self.reentrant is None:
                x = block(x)
            else:
                x = checkpoint(block, x, use_reentrant=self.reentrant)
        return self.head(x.mean(1))


def build():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    batches = [
        (torch.randn(8, 5, 6, generator=generator), torch.randint(0, 3, (8,), generator=generator))
        for _ in range(3)
    ]
    return Net(), batches


def per_sample_loss(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y, reduction="none")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reentrant", type=int, choices=[0, 1], default=1)
    args = parser.parse_args()
    model, batches = build()
    model.reentrant = bool(args.reentrant)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step, (x, y) in enumerate(batches):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        print(f"step {step} loss {loss.item()!r}")


if __name__ == "__main__":
    main()
