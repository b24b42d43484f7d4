"""The PyTorch examples idiom: no optimizer, zero_grad, backward, update through .data."""

import torch
import torch.nn.functional as F
from reflog import RefLog, seeded
from torch import nn


def build():
    seeded(5)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    return model, torch.randn(12, 6), torch.randint(0, 3, (12,))


def main():
    model, x, y = build()
    log = RefLog(model.named_parameters())
    lr = 0.2
    for step in range(4):
        model.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        log.before_update(loss)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)
        log.after_update()
        print(f"step {step} loss {loss.item()!r}")
    log.dump()


if __name__ == "__main__":
    main()
