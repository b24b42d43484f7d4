"""A two-task regression model on synthetic data, with three planted problems.

- Conflicting tasks: the "flip" loss was meant for its own head but is wired to the "fit"
  head's output with the opposite target (a sign-convention bug), so the two losses pull
  the shared layers in opposite directions (PCGrad-style conflict, cosine well below 0).
- A noisy data source: samples from source 1 carry labels with heavy noise, which makes
  per-sample gradients disagree (low coherence); they are labelled with gradscope.groups()
  for per-group statistics (--profile full).
- A learning-rate burst: the rate jumps about 70x for two steps (a spike it recovers from).

Runs on CPU in seconds and needs no data. It uses two one-line gradscope calls, which
do nothing unless a recorder is active.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import gradscope


class TwoTaskNet(nn.Module):
    def __init__(self, features: int = 16, width: int = 64) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Linear(features, width), nn.GELU(), nn.LayerNorm(width), nn.Linear(width, width), nn.GELU()
        )
        self.fit_head = nn.Linear(width, 1)
        self.flip_head = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fit = self.fit_head(self.trunk(x)).squeeze(-1)
        return fit, fit  # the planted bug: "flip" should read self.flip_head


def make_data(samples: int, features: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    x = torch.randn(samples, features, generator=generator)
    direction = torch.randn(features, generator=generator)
    signal = x @ direction / features**0.5
    source = (torch.rand(samples, generator=generator) < 0.25).long()  # 1 = noisy source
    noise = torch.randn(samples, generator=generator) * (0.1 + 2.0 * source)
    return x, signal + noise, -0.5 * signal, source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    x, fit_target, flip_target, source = make_data(4096, 16, generator)
    model = TwoTaskNet()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    burst = range(args.steps * 2 // 3, args.steps * 2 // 3 + 2)
    for step in range(args.steps):
        index = torch.randint(0, len(x), (args.batch,), generator=generator)
        for group in optimizer.param_groups:
            group["lr"] = 0.2 if step in burst else 3e-3
        fit, flip = model(x[index])
        fit_loss = nn.functional.mse_loss(fit, fit_target[index])
        flip_loss = nn.functional.mse_loss(flip, flip_target[index])
        gradscope.tasks(fit=fit_loss, flip=flip_loss)
        gradscope.groups(source[index])
        optimizer.zero_grad()
        (fit_loss + flip_loss).backward()
        optimizer.step()
        if step % 40 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  fit {fit_loss.item():.4f}  flip {flip_loss.item():.4f}")


if __name__ == "__main__":
    main()
