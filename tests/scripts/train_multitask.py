"""Multi-task dense prediction with a planted label conflict.

A conv trunk feeds a segmentation head (per-pixel, 2 classes) and a depth head. Depth is
supervised by three label sources on the same head: "depth" (correct), "depth_twin" (the
same labels with a little noise: agrees) and "depth_flip" (a sign bug: conflicts).
The only gradscope line is the ``gradscope.tasks(...)`` call, a no-op when not recording.
"""

import torch
import torch.nn.functional as F
from reflog import seeded
from torch import nn

import gradscope


class MultiTaskNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        )
        self.seg = nn.Conv2d(8, 2, 1)
        self.depth = nn.Conv2d(8, 1, 1)

    def forward(self, x):
        features = self.trunk(x)
        return self.seg(features), self.depth(features)


def per_sample(loss):
    return loss.flatten(1).mean(1)  # (B, ...) -> (B,)


seeded(3)
model = MultiTaskNet()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
x = torch.randn(12, 3, 8, 8)
labels = (x[:, 0] + x[:, 1] > 0).long()  # (B, H, W)
depth = x[:, 2:3].tanh() + 0.5 * labels[:, None]  # (B, 1, H, W)
twin = depth + 0.05 * torch.randn_like(depth)
for step in range(8):
    optimizer.zero_grad()
    seg_logits, predicted = model(x)
    l_seg = per_sample(F.cross_entropy(seg_logits, labels, reduction="none"))
    l_depth = per_sample((predicted - depth) ** 2)
    l_twin = per_sample((predicted - twin) ** 2)
    l_flip = per_sample((predicted + depth) ** 2)
    gradscope.tasks(seg=l_seg, depth=l_depth, depth_twin=l_twin, depth_flip=l_flip)
    loss = (l_seg + l_depth + l_twin + l_flip).mean()
    loss.backward()
    optimizer.step()
    print(f"step {step} loss {loss.item()!r} seg {l_seg.mean().item()!r} rand {torch.rand(1).item()!r}")
