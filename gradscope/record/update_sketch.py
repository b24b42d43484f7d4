"""LAYERS.update_sketch: a fixed-length signed projection of each parameter's update.

The update u = W_after - W_before of a parameter with d entries, flattened and zero-padded
to a multiple of k = 64, is read as a matrix U of d / k rows and k columns (entry j at row
j // k, column j mod k) and projected to k numbers with one random sign per row:

    S(u)_b = sum_i r_i U_ib,   r_i in {-1, +1}.

This is a count sketch (Charikar, Chen & Farach-Colton 2002) whose bucket is j mod k and
whose sign is r_{j // k}: <S(u), S(v)> = <u, v> + sum_b sum_{i != i'} r_i r_i' U_ib V_i'b,
and the second term has mean 0 over the signs (pairwise independent), so the estimate is
unbiased, with variance sum_b sum_{i != i'} (U_ib^2 V_i'b^2 + U_ib V_ib U_i'b V_i'b), about
(|u|^2 |v|^2 + <u, v>^2) / k for updates without structure aligned to the columns. It is
linear, so u_t = -c u_{t-1} reads cos = -1 exactly. One matrix-vector product per
parameter (as cheap as a norm); only d / k signs are drawn. A parameter with d <= k entries
is stored as it is: its inner products are exact.

The signs come from an integer hash of the row index (splitmix64's finaliser, Steele et
al. 2014) salted with the parameter's position in the step's parameter list: the same
projection every step for a given parameter, on any device, different parameters
independent, no random number drawn from torch's generators, nothing full-size kept
across steps. Consumers: update oscillation cos(u_t, u_{t-1}) per parameter or layer
(docs/metrics.md).
"""

from __future__ import annotations

import torch

SKETCH_DIM = 64  # k: numbers stored per parameter and recorded step
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


def row_signs(rows: int, salt: int, device: torch.device) -> torch.Tensor:
    """r_0 .. r_{rows-1} in {-1, +1} (float32)."""
    x = _mix(torch.arange(rows, dtype=torch.int64, device=device) * _GOLDEN + salt)
    return ((x >> 40) & 1).to(torch.float32) * 2 - 1


def sketch_one(update: torch.Tensor, salt: int, k: int = SKETCH_DIM) -> torch.Tensor:
    """The k-vector S(update) (float32) of one update."""
    flat = update.detach().reshape(-1).float()
    if flat.numel() <= k:
        return torch.nn.functional.pad(flat, (0, k - flat.numel()))
    full, rest = divmod(flat.numel(), k)
    signs = row_signs(full + (rest > 0), salt, flat.device)
    sketch = signs[:full] @ flat[: full * k].view(full, k)  # no copy of the update
    if rest:  # the last, partial row: zero-padded
        sketch[:rest] += signs[full] * flat[full * k :]
    return sketch


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
