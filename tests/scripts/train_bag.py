"""Text classification with EmbeddingBag and offsets (the PyTorch text tutorial's model)."""

import torch
from torch import nn
from torch.nn import functional as F


class TextClassificationModel(nn.Module):
    def __init__(self, vocab_size=50, embed_dim=16, num_class=4):
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab_size, embed_dim)
        self.fc = nn.Linear(embed_dim, num_class)

    def forward(self, text, offsets):
        return self.fc(self.embedding(text, offsets))


def build():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(3):
        lengths = torch.randint(1, 7, (6,), generator=generator)
        text = torch.randint(0, 50, (int(lengths.sum()),), generator=generator)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)[:-1]])
        batches.append((text, offsets, torch.randint(0, 4, (6,), generator=generator)))
    return TextClassificationModel(), batches


def per_sample_loss(model, batch):
    text, offsets, label = batch
    return F.cross_entropy(model(text, offsets), label, reduction="none")


def main():
    model, batches = build()
    optimizer = torch.optim.SGD(model.parameters(), lr=5.0)
    for step, (text, offsets, label) in enumerate(batches):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(text, offsets), label)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        print(f"step {step} loss {loss.item()!r}")


if __name__ == "__main__":
    main()
