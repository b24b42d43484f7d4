"""A DataLoader with worker processes (fork or spawn): workers must stay silent."""

import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def main(start_method):
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(64, 5), torch.randint(0, 2, (64,)))
    loader = DataLoader(data, batch_size=16, num_workers=2, multiprocessing_context=start_method)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    validation = DataLoader(data, batch_size=32)
    for epoch in range(2):
        for step, (x, y) in enumerate(loader):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            print(f"epoch {epoch} step {step} loss {loss.item()!r}")
        with torch.no_grad():
            print("validation", sum(nn.functional.cross_entropy(model(x), y).item() for x, y in validation))


if __name__ == "__main__":
    main(sys.argv[1])
