"""Attention logit growth: a tiny causal transformer (nanoGPT shape: token and position
embeddings, one pre-LN block with F.scaled_dot_product_attention, an MLP, a linear head)
trained with AdamW warmed up linearly over 30 steps to lr 1.0, far past what such a model
tolerates (Wortsman et al. 2023: without qk-layernorm the attention logits grow, the
softmax goes one-hot, and the loss diverges later: here it falls to ~1.3 by step 8, then
climbs back past its starting value at step 17 and keeps rising).

Healthy twin: the same warm-up to lr 3e-4 (the usual Adam rate for a model this size).
"""

import torch
from _common import parse, seeded
from torch import nn
from torch.nn import functional as F

args = parse(__doc__, steps=40)
generator = seeded(0)
vocab, width, heads, context, batch = 16, 32, 2, 16, 64


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.c_attn, self.c_proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(width, dim=2)
        q, k, v = (z.view(b, t, heads, c // heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))
        return x + self.mlp(self.ln_2(x))


class TinyGPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.block, self.ln_f = Block(), nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        return self.lm_head(self.ln_f(self.block(x)))


# sequences that repeat a random 4-token motif: the next token is predictable from 4 back
motifs = torch.randint(0, vocab, (512, 4), generator=generator)
data = motifs.repeat(1, (context + 1) // 4 + 1)[:, : context + 1]
model = TinyGPT()
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4 if args.healthy else 1.0, weight_decay=0.0)
scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 30))
for step in range(args.steps):
    index = torch.randint(0, len(data), (batch,), generator=generator)
    x, y = data[index, :-1], data[index, 1:]
    logits = model(x)
    loss = F.cross_entropy(logits.view(-1, vocab), y.reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    print(f"step {step} loss {loss.item():.4f}")
