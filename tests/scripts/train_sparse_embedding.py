"""A bag-of-words classifier with nn.Embedding(sparse=True): sparse gradients, plain SGD."""

import torch
import torch.nn.functional as F
from reflog import RefLog, seeded
from torch import nn


class Bag(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 8, sparse=True)
        self.out = nn.Linear(8, 3)

    def forward(self, ids):
        return self.out(self.embed(ids).mean(1))


def build():
    seeded(9)
    model = Bag()
    return model, torch.randint(0, 50, (6, 5)), torch.randint(0, 3, (6,))


def main():
    model, ids, y = build()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    log = RefLog(model.named_parameters())
    for step in range(3):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(ids), y)
        loss.backward()
        log.before_update(loss)
        optimizer.step()
        log.after_update()
        print(f"step {step} loss {loss.item()!r}")
    log.dump()


if __name__ == "__main__":
    main()
