"""An LSTM classifier on sequence-first inputs [T, B, d] (nn.LSTM's default layout)."""

import torch
from torch import nn
from torch.nn import functional as F


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.lstm = nn.LSTM(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):  # x: [B, T, 4]
        out, _ = self.lstm(self.embed(x).transpose(0, 1))  # [T, B, 8]
        return self.head(out[-1])


def build():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    batches = [
        (torch.randn(6, 5, 4, generator=generator), torch.randint(0, 3, (6,), generator=generator))
        for _ in range(3)
    ]
    return Classifier(), batches


def per_sample_loss(model, batch):
    x, y = batch
    return F.cross_entropy(model(x), y, reduction="none")


def main():
    model, batches = build()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step, (x, y) in enumerate(batches):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        print(f"step {step} loss {loss.item()!r}")


if __name__ == "__main__":
    main()
