"""Baseline: gradient accumulation over 4 micro-batches, each loss divided by 4."""

import reference as ref
import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(1)
torch.set_default_dtype(torch.float64)
model = nn.Sequential(nn.Linear(5, 12), nn.GELU(), nn.Linear(12, 3))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
accumulation_steps = 4
x_all, y_all = torch.randn(48, 5), torch.randint(0, 3, (48,))
log = ref.Reference(per_sample_scale=16.0)  # 4 samples per micro-batch, loss / 4


def micro_loss(m, j, x, y):
    return F.cross_entropy(ref.spliced(m, ref.split(x), j), y) / accumulation_steps


for i in range(12):
    x, y = x_all[4 * i : 4 * i + 4], y_all[4 * i : 4 * i + 4]
    loss = F.cross_entropy(model(x), y) / accumulation_steps
    loss.backward()
    log.backward(loss.item(), model, micro_loss, x, y)
    if (i + 1) % accumulation_steps == 0:
        optimizer.step()
        optimizer.zero_grad()
        log.step()
        print(f"step {i // accumulation_steps} loss {log.steps[-1]['loss']!r}")
log.dump()
