"""A small classifier trained with SGD, its loss written one of the ways people write it.

``python train_losses.py CASE``: plain, sum, ignore_index, label_smoothing, reg_ce, ce_reg
(a logit penalty added before / after the cross-entropy), accumulate (4 micro-batches,
loss / 4), scaler (GradScaler on CPU, scale doubling every step), autocast (bfloat16
autocast with a GradScaler). The tests import ``build`` and ``loss_of`` for the reference.
"""

import sys

import torch
import torch.nn.functional as F
from reflog import RefLog
from torch import nn

ACCUMULATE = 4


def build():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4))
    generator = torch.Generator().manual_seed(1)
    batches = [
        (torch.randn(8, 6, generator=generator), torch.randint(0, 4, (8,), generator=generator))
        for _ in range(3)
    ]
    return model, batches


def loss_of(case, output, target):
    """The script's loss on a batch of logits, exactly as the training loop computes it."""
    if case == "ignore_index":
        target = target.clone()
        target[1::3] = -100  # padding positions
        return F.cross_entropy(output, target, ignore_index=-100)
    if case == "label_smoothing":
        return F.cross_entropy(output, target, label_smoothing=0.1)
    if case == "sum":
        return F.cross_entropy(output, target, reduction="sum")
    penalty = 0.01 * output.pow(2).mean()
    if case == "reg_ce":
        return penalty + F.cross_entropy(output, target)
    if case == "ce_reg":
        return F.cross_entropy(output, target) + penalty
    return F.cross_entropy(output, target)


def parts(case, x, y):
    """The micro-batches of one step and the divisor of their losses."""
    if case != "accumulate":
        return [(x, y)], 1
    size = len(x) // ACCUMULATE
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)], ACCUMULATE


def main():
    case = sys.argv[1]
    model, batches = build()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = None
    if case in ("scaler", "autocast"):
        scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_factor=2.0, growth_interval=1)
    log = RefLog(model.named_parameters())
    for step, (x, y) in enumerate(batches):
        optimizer.zero_grad()
        total = 0.0
        micro_batches, divisor = parts(case, x, y)
        for xs, ys in micro_batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case == "autocast"):
                loss = loss_of(case, model(xs).float(), ys) / divisor
            if scaler is not None:
                scaler.scale(loss).backward()
            else:
                loss.backward()
            total += loss.item()
        if scaler is not None:
            scaler.unscale_(optimizer)
        log.before_update(total)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        log.after_update()
        print(f"step {step} loss {total!r}")
    log.dump()


if __name__ == "__main__":
    main()
