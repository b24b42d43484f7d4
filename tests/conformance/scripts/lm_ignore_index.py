"""Idiom 5a: a [B, T] language-model batch flattened nanoGPT-style, padded targets ignored."""

import reference as ref
import torch
import torch.nn.functional as F
from torch import nn


class TinyLM(nn.Module):
    def __init__(self, vocab=11, width=8):
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.mlp = nn.Linear(width, width)
        self.lm_head = nn.Linear(width, vocab)

    def forward(self, idx, targets=None):
        x = self.wte(idx)
        x = x + torch.tanh(self.mlp(x))
        logits = self.lm_head(x)
        if targets is None:
            return logits
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-100)


def get_batch(generator):
    tokens = torch.randint(0, 11, (4, 7), generator=generator)
    x, y = tokens[:, :-1].clone(), tokens[:, 1:].clone()
    lengths = torch.randint(2, 7, (4,), generator=generator)
    for row, length in enumerate(lengths.tolist()):
        y[row, length:] = -100  # padding: no target
    return x, y


def loss_of(m, j, x, y):
    logits = ref.spliced(m, ref.split(x), j)
    return F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=-100)


torch.manual_seed(10)
torch.set_default_dtype(torch.float64)
generator = torch.Generator().manual_seed(10)
model = TinyLM()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
log = ref.Reference()

for step in range(4):
    x, y = get_batch(generator)
    logits, loss = model(x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    log.backward(loss.item(), model, loss_of, x, y)
    optimizer.step()
    log.step()
    print(f"step {step}: loss {loss.item()!r}")
log.dump()
