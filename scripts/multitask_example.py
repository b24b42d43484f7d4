"""A multi-task dense-prediction model with a planted task conflict, for gradscope.tasks().

Run it plain (gradscope.tasks() is a no-op without a recorder)::

    python scripts/multitask_example.py

Record it and read the report::

    gradscope record --out runs/multitask -- python scripts/multitask_example.py
    gradscope report runs/multitask            # add --html report.html for plots

What is planted. A small conv trunk is shared by a segmentation head (per-pixel, 3 classes)
and a depth head. The depth head is supervised twice: by ``depth`` and by ``disparity``,
a second label source whose loss was written with the wrong sign convention (it pulls the
prediction towards -depth). A third task, ``edges`` (a per-pixel boundary regression on
its own head), is an honest auxiliary task.

How to read the report. The conflict verdict is an alert naming ``depth|disparity``: their
gradients point in opposite directions (median cos about -1.0, conflict on every step) on
the trunk and on the depth head. The other pairs stay near orthogonal (|cos| about 0.2 or
less): unrelated tasks, not a fight. The per-layer conflict map (layer@pair) shows where
the fight happens (trunk.0, trunk.2, depth); "most conflicted samples" lists the samples
whose own depth and disparity gradients oppose most (per-sample losses are passed, so
TASK_SAMPLES is recorded); MGDA weights split the pair and mgda_norm stays small: no
common descent direction. Fix the sign (``+ batch["depth"]`` -> ``- batch["depth"]`` in
``disparity``) and record again: the alert goes away.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import gradscope

STEPS = 40
BATCH = 32
SIZE = 16  # image side, pixels


class MultiTaskNet(nn.Module):
    """Shared conv trunk -> segmentation logits, depth and edge maps (all per pixel)."""

    def __init__(self, channels: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
        )
        self.seg = nn.Conv2d(channels, classes, 1)
        self.depth = nn.Conv2d(channels, 1, 1)
        self.edges = nn.Conv2d(channels, 1, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        features = self.trunk(x)  # (B, C, H, W)
        return self.seg(features), self.depth(features), self.edges(features)


def synthetic_batch(generator: torch.Generator) -> dict[str, Tensor]:
    """Images whose classes, depth and edges are smooth functions of the pixels."""
    x = torch.randn(BATCH, 3, SIZE, SIZE, generator=generator)
    x = F.avg_pool2d(x, 3, stride=1, padding=1)  # spatially smooth inputs
    classes = torch.bucketize(x[:, 0] + x[:, 1], torch.tensor([-0.3, 0.3]))  # (B, H, W) in 0..2
    depth = (x[:, 2:3] * 2).tanh() + 0.3 * classes[:, None]  # (B, 1, H, W)
    edges = (classes[:, None, :, 1:] != classes[:, None, :, :-1]).float()
    edges = F.pad(edges, (0, 1))  # (B, 1, H, W)
    return {"x": x, "classes": classes, "depth": depth, "edges": edges}


def per_sample(loss: Tensor) -> Tensor:
    """Mean over every non-batch dim: (B, ...) -> (B,)."""
    return loss.flatten(1).mean(1)


def main() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = MultiTaskNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(STEPS):
        batch = synthetic_batch(generator)
        seg_logits, depth, edges = model(batch["x"])
        losses = {
            "seg": per_sample(F.cross_entropy(seg_logits, batch["classes"], reduction="none")),
            "depth": per_sample((depth - batch["depth"]) ** 2),
            "disparity": per_sample((depth + batch["depth"]) ** 2),  # planted: wrong sign
            "edges": per_sample(F.binary_cross_entropy_with_logits(edges, batch["edges"], reduction="none")),
        }
        gradscope.tasks(**losses)  # the one gradscope line: per-task gradient conflict
        loss = sum(value.mean() for value in losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 0 or step == STEPS - 1:
            parts = "  ".join(f"{name} {value.mean().item():.3f}" for name, value in losses.items())
            print(f"step {step:3d}  loss {loss.item():.3f}  {parts}")


if __name__ == "__main__":
    main()
