"""LAYERS.update_sketch: a fixed-length signed projection of each parameter's update.

The update u = W_after - W_before of a parameter with d entries is projected to k = 64
numbers by a count sketch (Charikar, Chen & Farach-Colton 2002; the hashing trick of
Weinberger et al. 2009): entry j goes to bucket h(j) with sign s(j),

    S(u)_b = sum_{j : h(j) = b} s(j) u_j,

so <S(u), S(v)> = <u, v> + sum_{j != l, h(j) = h(l)} s(j) s(l) u_j v_l, whose second term
has mean 0 over the hash (pairwise-independent signs) and variance about
(|u|^2 |v|^2 + <u, v>^2) / k. A parameter with d <= k entries is stored as it is
(h(j) = j, s(j) = +1): its inner products are exact.

h and s are computed from the entry's position by an integer hash (splitmix64's
finaliser, Steele et al. 2014), salted with the recording seed and the parameter's
position in the step's parameter list: the same projection every step for a given
parameter, different parameters independent, no random number drawn from torch's
generators and nothing full-size kept across steps (the hash runs in chunks of
``CHUNK`` entries). Consumers: update oscillation cos(u_t, u_{t-1}) per parameter or
layer (docs/metrics.md).
"""

from __future__ import annotations

import torch

SKETCH_DIM = 64  # k: numbers stored per parameter and recorded step
CHUNK = 1 << 22  # entries hashed at a time (bounds the transient int64 memory)
_MASK63 = (1 << 63) - 1
_GOLDEN = 0x9E3779B97F4A7C15 - (1 << 64)  # splitmix64's increment as a signed int64
_MIX1 = 0xBF58476D1CE4E5B9 - (1 << 64)
_MIX2 = 0x94D049BB133111EB - (1 << 64)


def _shift(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic on negative values)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 (wrapping multiplication)."""
    x = (x ^ _shift(x, 30)) * _MIX1
    x = (x ^ _shift(x, 27)) * _MIX2
    return x ^ _shift(x, 31)


def buckets_and_signs(start: int, count: int, salt: int, k: int, device: torch.device):
    """h(j) in [0, k) and s(j) in {-1, +1} for entries start .. start + count - 1."""
    j = torch.arange(start, start + count, dtype=torch.int64, device=device)
    x = _mix(j * _GOLDEN + salt)
    bucket = (x & _MASK63) % k
    sign = ((x >> 40) & 1).to(torch.float32) * 2 - 1
    return bucket, sign


def sketch_one(update: torch.Tensor, salt: int, k: int = SKETCH_DIM) -> torch.Tensor:
    """The k-vector S(update) (float32) of one flattened update."""
    flat = update.detach().reshape(-1).float()
    out = torch.zeros(k, dtype=torch.float32, device=flat.device)
    if flat.numel() <= k:
        out[: flat.numel()] = flat
        return out
    for start in range(0, flat.numel(), CHUNK):
        part = flat[start : start + CHUNK]
        bucket, sign = buckets_and_signs(start, part.numel(), salt, k, flat.device)
        out.index_add_(0, bucket, part * sign)
    return out


def salt_of(seed: int, position: int) -> int:
    """The hash salt of the parameter at ``position`` (a signed int64)."""
    value = (seed * 1_000_003 + position + 1) * 0x2545F4914F6CDD1D
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def update_sketches(
    params: list[torch.Tensor], before: list[torch.Tensor], seed: int = 0, k: int = SKETCH_DIM
) -> torch.Tensor:
    """[P, k] float32: S(W_after - W_before) per parameter, on the first parameter's device.
    A dense ``before`` on another device is moved one parameter at a time."""
    if not params:
        return torch.zeros(0, k, dtype=torch.float32)
    device = params[0].device
    rows = []
    for position, (param, old) in enumerate(zip(params, before)):
        update = param.detach().float() - old.to(device=param.device, non_blocking=True).float()
        rows.append(sketch_one(update, salt_of(seed, position), k).to(device))
    return torch.stack(rows)
