"""Idiom 7: a WGAN-GP critic step: gradient penalty through create_graph=True (double backward)."""

import reference as ref
import torch
from torch import nn


def critic_terms(critic, real, fake, eps):
    """Per-sample D(fake), D(real) and gradient penalty, as WGAN-GP code computes them."""
    interpolates = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(interpolates).sum(), interpolates, create_graph=True)
    return critic(fake), critic(real), (grad.norm(2, dim=1) - 1) ** 2


def critic_loss(d_fake, d_real, penalty):
    return d_fake.mean() - d_real.mean() + 10.0 * penalty.mean()


def loss_of(m, j, real, fake, eps):
    pieces = []
    for k in range(len(real)):
        terms = critic_terms(m, real[k : k + 1], fake[k : k + 1], eps[k : k + 1])
        pieces.append(terms if j is None or k == j else tuple(t.detach() for t in terms))
    return critic_loss(*(torch.cat(column) for column in zip(*pieces)))


torch.manual_seed(15)
torch.set_default_dtype(torch.float64)
critic = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
optimizer = torch.optim.Adam(critic.parameters(), lr=1e-3, betas=(0.5, 0.9))
generator_weight = torch.randn(3, 4)  # a frozen generator: fakes are fixed functions of noise
log = ref.Reference(per_sample_scale=6.0)

for step in range(4):
    real = torch.randn(6, 4) + 1.0
    fake = torch.tanh(torch.randn(6, 3) @ generator_weight)
    eps = torch.rand(6, 1)
    optimizer.zero_grad()
    loss = critic_loss(*critic_terms(critic, real, fake, eps))
    loss.backward()
    log.backward(loss.item(), critic, loss_of, real, fake, eps)
    optimizer.step()
    log.step()
    print(f"step {step} critic loss {loss.item()!r}")
log.dump()
