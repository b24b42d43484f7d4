"""A sequence-first transformer (nn.TransformerEncoder, batch_first=False): inputs [T, B, d]."""

import torch
from torch import nn

TOKENS, BATCH = 7, 5


def build():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0)
    model = nn.Sequential(
        nn.Linear(4, 16), nn.TransformerEncoder(layer, 1, enable_nested_tensor=False), nn.Linear(16, 1)
    )
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randn(TOKENS, BATCH, 4, generator=generator) for _ in range(3)]
    return model, batches


def per_sample_loss(model, x):
    """Each sample's mean squared output: [B] (the batch loss is its mean)."""
    return model(x).pow(2).mean(dim=(0, 2))


def main():
    model, batches = build()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for step, x in enumerate(batches):
        optimizer.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        optimizer.step()
        print(f"step {step} loss {loss.item()!r}")


if __name__ == "__main__":
    main()
