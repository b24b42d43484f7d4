"""Attention probes: per head, the largest |q.k| / sqrt(d) and the mean attention entropy.

Wortsman et al. 2023 ("Small-scale proxies for large-scale Transformer training
instabilities"): attention logits that keep growing drive the softmax to one-hot; Zhai et
al. 2023 ("Stabilizing Transformer Training by Preventing Attention Entropy Collapse"):
the entropy of the attention rows falling towards 0 comes before divergence.

Everything runs under ``torch.no_grad`` on detached q and k (no autograd node, no random
number): logits l_ts = scale * q_t . k_s over the keys a query may attend to (causal and
padding masks), p = softmax(l + additive mask), H_t = -sum_s p_ts log p_ts. When B * H * T
* S is large, an evenly spaced subset of queries (and, past that, the first samples) is
used: at most ``BUDGET`` logits per call. No random number is drawn for it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

BUDGET = 1 << 16  # logits per attention call (256 KiB in float32; docs/performance.md)
POWER_ITERATIONS = 20


def _subsample(q: Tensor, k: Tensor, budget: int) -> tuple[Tensor, Tensor | None, int]:
    """(q restricted to a bounded set of queries and samples, the query indices or None, samples kept)."""
    batch, heads, queries = q.shape[0], q.shape[1], q.shape[2]
    keys = k.shape[2]
    per_query = max(1, batch * heads * keys)
    if batch * heads * queries * keys <= budget:
        return q, None, batch
    count = max(1, min(queries, budget // per_query))
    index = torch.linspace(0, queries - 1, count, device=q.device).round().long().unique()
    kept = batch if count > 1 or batch * heads * keys <= budget else max(1, budget // (heads * keys))
    return q[:kept, :, index], index, kept


def _mask_slice(mask: Tensor | None, index: Tensor | None, kept: int) -> Tensor | None:
    """The mask broadcast to [b, h, t, s] and restricted to the kept samples and queries."""
    if mask is None:
        return None
    while mask.dim() < 4:
        mask = mask.unsqueeze(0)
    if mask.shape[0] > 1:
        mask = mask[:kept]
    if index is not None and mask.shape[2] > 1:
        mask = mask[:, :, index]
    return mask


def attention_stats(
    q: Tensor, k: Tensor, *, allowed: Tensor | None = None, additive: Tensor | None = None,
    causal: bool = False, scale: float | None = None, budget: int = BUDGET,
) -> dict[str, Tensor]:
    """Per-head statistics of one attention call, all float32 tensors of shape [H].

    q: [B, H, T, d], k: [B, H, S, d] (grouped-query k with fewer heads is repeated).
    ``allowed``: bool, True where a query may attend to a key (SDPA's convention),
    broadcastable to [B, H, T, S]; ``additive``: float added to the logits (-inf masks);
    ``causal``: query t sees keys s <= t (top-left aligned, as SDPA's is_causal).
    Returns max_logit (max |l| over allowed pairs), entropy_sum and rows (entropy summed
    over query rows that see at least one key, and their count), log_keys_sum (sum over
    those rows of log of the number of keys they see: the entropy of a uniform row).
    """
    with torch.no_grad():
        q, k = q.detach().float(), k.detach().float()
        if k.shape[1] != q.shape[1]:
            k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        queries = q.shape[2]
        q, index, kept = _subsample(q, k, budget)
        k = k[:kept]
        logits = torch.matmul(q, k.transpose(-1, -2)) * scale  # [b, H, t, S]
        ok = torch.ones_like(logits, dtype=torch.bool)
        if causal:
            rows = torch.arange(queries, device=q.device) if index is None else index
            ok = ok & (torch.arange(k.shape[2], device=q.device)[None, :] <= rows[:, None])
        mask = _mask_slice(allowed, index, kept)
        if mask is not None:
            ok = ok & mask.to(torch.bool)
        shifted = logits.masked_fill(~ok, -math.inf)
        extra = _mask_slice(additive, index, kept)
        if extra is not None:
            shifted = shifted + extra.float()
            ok = ok & torch.isfinite(shifted)
        live = ok.any(-1)  # [b, H, t]: rows that see a key
        shifted = shifted.masked_fill(~live[..., None], 0.0)
        log_z = torch.logsumexp(shifted, dim=-1, keepdim=True)
        probs = torch.exp(shifted - log_z)  # H = log Z - sum_s p_s l_s over the keys seen
        entropy = (log_z.squeeze(-1) - (probs * shifted.masked_fill(probs == 0, 0.0)).sum(-1))
        entropy = entropy.clamp(min=0.0).masked_fill(~live, 0.0)
        log_keys = torch.log(ok.sum(-1).clamp(min=1).float()).masked_fill(~live, 0.0)
        return {
            "max_logit": logits.abs().masked_fill(~ok, 0.0).amax(dim=(0, 2, 3)),
            "entropy_sum": entropy.sum(dim=(0, 2)),
            "rows": live.sum(dim=(0, 2)).float(),
            "log_keys_sum": log_keys.sum(dim=(0, 2)),
        }


def _mha_batch_first(module: nn.MultiheadAttention, x: Tensor) -> Tensor:
    """[B, T, E] whatever the module's layout; unbatched [T, E] becomes [1, T, E]."""
    if x.dim() == 2:
        return x.unsqueeze(0)
    return x if module.batch_first else x.transpose(0, 1)


def _mha_masks(module: nn.MultiheadAttention, call: dict, heads: int) -> tuple[Tensor | None, Tensor | None]:
    """MultiheadAttention's masks as (allowed, additive) in SDPA's convention: a bool
    attn_mask / key_padding_mask is True where attention is NOT allowed there."""
    allowed, additive = None, None
    for mask, shape in ((call.get("attn_mask"), "attn"), (call.get("key_padding_mask"), "pad")):
        if mask is None:
            continue
        if shape == "pad":
            mask = mask[:, None, None, :] if mask.dim() == 2 else mask[None, None, None, :]
        elif mask.dim() == 3:  # [B * heads, T, S]
            mask = mask.reshape(-1, heads, *mask.shape[1:])
        if mask.dtype == torch.bool:
            allowed = ~mask if allowed is None else allowed & ~mask
        else:
            additive = mask if additive is None else additive + mask
    return allowed, additive


def mha_call(args: tuple, kwargs: dict) -> dict:
    """nn.MultiheadAttention.forward's arguments by name."""
    names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask")
    call = dict(zip(names, args))
    call.update(kwargs)
    return call


def mha_stats(module: nn.MultiheadAttention, args: tuple, kwargs: dict) -> dict[str, Tensor] | None:
    """attention_stats of a MultiheadAttention call from its inputs and in-projection;
    None when the call adds bias_k / zero-attention keys (not reproduced)."""
    if module.bias_k is not None or module.add_zero_attn:
        return None
    call = mha_call(args, kwargs)
    heads, embed = module.num_heads, module.embed_dim
    with torch.no_grad():
        query = _mha_batch_first(module, call["query"].detach())
        key = _mha_batch_first(module, call["key"].detach())
        w_q, w_k = _mha_qk_weights(module)
        bias = module.in_proj_bias
        b_q = None if bias is None else bias[:embed]
        b_k = None if bias is None else bias[embed : 2 * embed]
        q = nn.functional.linear(query.to(w_q.dtype), w_q, b_q)
        k = nn.functional.linear(key.to(w_k.dtype), w_k, b_k)
        q = q.unflatten(-1, (heads, embed // heads)).transpose(1, 2)
        k = k.unflatten(-1, (heads, embed // heads)).transpose(1, 2)
        allowed, additive = _mha_masks(module, call, heads)
        return attention_stats(q, k, allowed=allowed, additive=additive)


def _mha_qk_weights(module: nn.MultiheadAttention) -> tuple[Tensor, Tensor]:
    if module.in_proj_weight is not None:
        w_q, w_k, _ = module.in_proj_weight.detach().chunk(3)
        return w_q, w_k
    return module.q_proj_weight.detach(), module.k_proj_weight.detach()


def weight_bound(module: nn.MultiheadAttention, generator: torch.Generator | None = None) -> Tensor:
    """Per head, sigma_max(W_Q,h^T W_K,h) / sqrt(d_h): |q.k| / sqrt(d_h) <= bound * |x| |y|
    for inputs x, y (biases aside). Power iteration on M^T M (M = W_Q,h^T W_K,h applied
    through its factors, never formed), from a start vector drawn on ``generator`` (a
    private one: torch's global stream is never touched). Returns a float32 tensor [H]."""
    heads, embed = module.num_heads, module.embed_dim
    head_dim = embed // heads
    with torch.no_grad():
        w_q, w_k = (w.float().reshape(heads, head_dim, -1) for w in _mha_qk_weights(module))
        generator = generator or torch.Generator(device=w_k.device).manual_seed(0)
        v = torch.randn(heads, w_k.shape[-1], 1, device=w_k.device, generator=generator)
        for _ in range(POWER_ITERATIONS):
            u = w_q.transpose(1, 2) @ (w_k @ v)  # M v
            v = w_k.transpose(1, 2) @ (w_q @ u)  # M^T M v
            v = v / v.norm(dim=1, keepdim=True).clamp(min=1e-30)
        sigma = (w_q.transpose(1, 2) @ (w_k @ v)).norm(dim=1).squeeze(-1)
        return sigma / math.sqrt(head_dim)


def sdpa_call(args: tuple, kwargs: dict) -> dict:
    """F.scaled_dot_product_attention's arguments by name."""
    names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
    call = dict(zip(names, args))
    call.update(kwargs)
    return call


def sdpa_stats(args: tuple, kwargs: dict) -> dict[str, Tensor] | None:
    """attention_stats of an SDPA call ([..., L, E] q/k; leading dims folded to [B, H])."""
    call = sdpa_call(args, kwargs)
    q, k, mask = call["query"], call["key"], call.get("attn_mask")
    if q.dim() < 2 or k.dim() != q.dim():
        return None
    if q.dim() != 4:  # [L, E] / [B, L, E]: one head
        q, k = q.reshape(-1, 1, *q.shape[-2:]), k.reshape(-1, 1, *k.shape[-2:])
    allowed = mask if mask is not None and mask.dtype == torch.bool else None
    additive = mask if mask is not None and mask.dtype != torch.bool else None
    return attention_stats(q, k, allowed=allowed, additive=additive, causal=bool(call.get("is_causal")),
                           scale=call.get("scale"))
