"""Idiom 10a: multiple-instance learning: an instance encoder over 12-14 instances, a head
over 5 bags; a sample is a bag (the loss's batch), never an instance."""

import reference as ref
import torch
import torch.nn.functional as F
from torch import nn


class MILNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(4, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, instances, bag_index, bags):
        h = torch.tanh(self.encoder(instances))
        pooled = torch.zeros(bags, h.shape[1], dtype=h.dtype).index_add(0, bag_index, h)
        counts = torch.bincount(bag_index, minlength=bags).unsqueeze(1)
        return self.head(pooled / counts)


def make_batch(total):
    sizes = torch.full((5,), total // 5)
    sizes[: total % 5] += 1
    bag_index = torch.repeat_interleave(torch.arange(5), sizes)
    return torch.randn(total, 4), bag_index, torch.randint(0, 2, (5,))


def loss_of(m, j, instances, bag_index, y):
    per_bag = [
        (instances[bag_index == k], torch.zeros(int((bag_index == k).sum()), dtype=torch.long), 1)
        for k in range(5)
    ]
    return F.cross_entropy(ref.spliced(m, per_bag, j), y)


torch.manual_seed(19)
torch.set_default_dtype(torch.float64)
model = MILNet()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
log = ref.Reference(per_sample_scale=5.0)

for step, total in enumerate([12, 13, 14, 12]):
    instances, bag_index, y = make_batch(total)
    optimizer.zero_grad()
    loss = F.cross_entropy(model(instances, bag_index, 5), y)
    loss.backward()
    log.backward(loss.item(), model, loss_of, instances, bag_index, y, batch=5)
    optimizer.step()
    log.step()
    print(f"step {step} instances {total} loss {loss.item()!r}")
log.dump()
