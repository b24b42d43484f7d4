"""Seeded random projections for per-sample gradient sketches.

For a parameter viewed as a [P, Q] matrix the sketch of G_i is the Kronecker projection
P_out G_i P_in^T ([k, k]) with P_out: [k, P], P_in: [k, Q], entries N(0, 1/k); for a 1-D
parameter it is Pi g_i with Pi: [k*k, P], entries N(0, 1/(k*k)). Since
E[P^T P] = I, E[<S(G), S(H)>] = <G, H>: inner products of sketches are unbiased estimates
of inner products of gradients (Johnson-Lindenstrauss; Kronecker form as in LoGra,
Choe et al. 2024).

Projections come from a private ``torch.Generator`` seeded from (seed, qualified parameter
name), never from torch's global generator, and are cached here, not on the parameter.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor


def projection_seed(seed: int, qualname: str) -> int:
    """A 63-bit seed derived from the run seed and the parameter's qualified name."""
    digest = hashlib.blake2b(f"{seed}/{qualname}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class SketchProjections:
    """Cache of per-parameter projections, keyed by qualified name, device and dtype."""

    def __init__(self, k: int, seed: int) -> None:
        self.k = k
        self.seed = seed
        self._cache: dict[tuple[str, str, torch.dtype], tuple[Tensor, ...]] = {}

    def get(self, qualname: str, param: Tensor, dtype: torch.dtype) -> tuple[Tensor, ...]:
        """(P_out [k, P], P_in [k, Q]) for a parameter with >= 2 dims, else (Pi [k*k, P],)."""
        key = (qualname, str(param.device), dtype)
        if key not in self._cache:
            self._cache[key] = self._draw(qualname, param, dtype)
        return self._cache[key]

    def _draw(self, qualname: str, param: Tensor, dtype: torch.dtype) -> tuple[Tensor, ...]:
        generator = torch.Generator(device=param.device)
        generator.manual_seed(projection_seed(self.seed, qualname))
        k = self.k

        def gaussian(rows: int, cols: int, std: float) -> Tensor:
            draw = torch.randn(
                rows, cols, generator=generator, device=param.device, dtype=torch.float64
            )
            return (draw * std).to(dtype)

        if param.dim() >= 2:
            rows = param.shape[0]
            cols = param.numel() // rows
            return gaussian(k, rows, k**-0.5), gaussian(k, cols, k**-0.5)
        return (gaussian(k * k, param.numel(), 1.0 / k),)
