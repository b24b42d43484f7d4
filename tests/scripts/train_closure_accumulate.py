"""Lightning's accumulate_grad_batches=2 shape: the first micro-batch's backward runs
before optimizer.step(closure), the second inside the closure."""

import torch
import torch.nn.functional as F
from reflog import RefLog, seeded
from torch import nn


def build():
    seeded(6)
    model = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 1))
    batches = [(torch.randn(6, 5), torch.randn(6, 1)) for _ in range(6)]
    return model, batches


def loss_of(output, target):
    return F.mse_loss(output, target) / 2


def main():
    model, batches = build()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    log = RefLog(model.named_parameters())
    for step in range(3):
        x, y = batches[2 * step]
        loss = loss_of(model(x), y)
        loss.backward()
        total = [loss.item()]

        def closure(batch=batches[2 * step + 1], total=total):
            loss = loss_of(model(batch[0]), batch[1])
            loss.backward()
            total.append(loss.item())
            log.before_update(sum(total))
            return loss

        optimizer.step(closure)
        log.after_update()
        optimizer.zero_grad()
        print(f"step {step} loss {sum(total)!r}")
    log.dump()


if __name__ == "__main__":
    main()
