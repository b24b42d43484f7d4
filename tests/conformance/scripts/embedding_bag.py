"""Idiom 10b: nn.EmbeddingBag with offsets (the PyTorch text-classification tutorial's model)."""

import reference as ref
import torch
import torch.nn.functional as F
from torch import nn


class TextClassificationModel(nn.Module):
    def __init__(self, vocab_size, embed_dim, num_class):
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab_size, embed_dim)
        self.fc = nn.Linear(embed_dim, num_class)

    def forward(self, text, offsets):
        return self.fc(self.embedding(text, offsets))


def collate(generator):
    lengths = torch.randint(2, 6, (5,), generator=generator)
    text = torch.randint(0, 30, (int(lengths.sum()),), generator=generator)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)[:-1]])
    return text, offsets, torch.randint(0, 3, (5,), generator=generator)


def loss_of(m, j, text, offsets, label):
    ends = torch.cat([offsets[1:], torch.tensor([len(text)])])
    one_bag = [(text[s:e], torch.zeros(1, dtype=torch.long)) for s, e in zip(offsets.tolist(), ends.tolist())]
    return F.cross_entropy(ref.spliced(m, one_bag, j), label)


torch.manual_seed(20)
torch.set_default_dtype(torch.float64)
generator = torch.Generator().manual_seed(20)
model = TextClassificationModel(30, 6, 3)
optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
log = ref.Reference(per_sample_scale=5.0)

for step in range(4):
    text, offsets, label = collate(generator)
    optimizer.zero_grad()
    predicted_label = model(text, offsets)
    loss = F.cross_entropy(predicted_label, label)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
    log.backward(loss.item(), model, loss_of, text, offsets, label, batch=5)
    optimizer.step()
    log.step()
    print(f"step {step} tokens {len(text)} loss {loss.item()!r}")
log.dump()
