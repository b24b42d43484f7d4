"""A small CNN (two convolutions, one strided and grouped, GroupNorm, Linear) on noise images."""

import torch
from torch import nn
from torch.nn import functional as F


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, groups=2)
        self.fc = nn.Linear(8 * 3 * 3, 5)

    def forward(self, x):
        x = F.relu(self.norm(self.conv1(x)))
        return self.fc(F.relu(self.conv2(x)).flatten(1))


def build():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    batches = [
        (torch.randn(16, 3, 8, 8, generator=generator), torch.randint(0, 5, (16,), generator=generator))
        for _ in range(3)
    ]
    return CNN(), batches


def per_sample_loss(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y, reduction="none")


def main():
    model, batches = build()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step, (x, y) in enumerate(batches):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        print(f"step {step} loss {loss.item()!r}")


if __name__ == "__main__":
    main()
