"""Multiple-instance learning: instances encoded one by one, attention-pooled per bag."""

import torch
from torch import nn
from torch.nn import functional as F

torch.manual_seed(0)


class AttentionMIL(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(8, 16)
        self.attention = nn.Linear(16, 1)
        self.head = nn.Linear(16, 2)

    def forward(self, instances, bag_sizes):
        h = torch.relu(self.encoder(instances))  # [instances, 16]
        pooled = []
        for bag in torch.split(h, bag_sizes):
            weights = torch.softmax(self.attention(bag), dim=0)
            pooled.append((weights * bag).sum(0))
        return self.head(torch.stack(pooled))  # [bags, 2]


model = AttentionMIL()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
for step in range(3):
    bag_sizes = [2, 3, 2, 4, 2 + step]
    instances = torch.randn(sum(bag_sizes), 8)
    labels = torch.randint(0, 2, (len(bag_sizes),))
    optimizer.zero_grad()
    loss = F.cross_entropy(model(instances, bag_sizes), labels)
    loss.backward()
    optimizer.step()
    print(f"step {step} loss {loss.item()!r}")
