"""A user's tensor hook raises during the first backward; the script catches it and goes on."""

import torch
import torch.nn.functional as F
from reflog import RefLog, seeded
from torch import nn


def build():
    seeded(7)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    return model, torch.randn(10, 4), torch.randint(0, 2, (10,))


def refuse(grad):
    raise RuntimeError("gradient rejected by a user hook\nsecond line of the message")


def main():
    model, x, y = build()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    log = RefLog(model.named_parameters())
    for step in range(4):
        optimizer.zero_grad()
        output = model(x)
        loss = F.cross_entropy(output, y)
        if step == 0:
            output.register_hook(refuse)
        try:
            loss.backward()
        except RuntimeError as error:
            print(f"step {step} skipped: {str(error).splitlines()[0]}")
            continue
        log.before_update(loss)
        optimizer.step()
        log.after_update()
        print(f"step {step} loss {loss.item()!r}")
    log.dump()


if __name__ == "__main__":
    main()
