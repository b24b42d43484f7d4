"""Attention probes against direct computation on hand-built attention."""

import math

import pytest
import torch
from torch import nn

from gradscope.record.probes.attention import attention_stats, mha_stats, sdpa_stats, weight_bound


def _direct(q, k, allowed, scale):
    """Per-head max |logit| over allowed pairs and mean row entropy, one query at a time."""
    batch, heads, queries, _ = q.shape
    max_logit = torch.zeros(heads, dtype=torch.float64)
    entropy = torch.zeros(heads, dtype=torch.float64)
    rows = torch.zeros(heads)
    for b in range(batch):
        for h in range(heads):
            for t in range(queries):
                keep = allowed[b, h, t]
                if not keep.any():
                    continue
                logits = (k[b, h][keep].double() @ q[b, h, t].double()) * scale
                max_logit[h] = max(max_logit[h], logits.abs().max())
                p = torch.softmax(logits, 0)
                entropy[h] -= (p * p.log()).sum()
                rows[h] += 1
    return max_logit, entropy / rows


def test_causal_attention_matches_direct_computation():
    torch.manual_seed(0)
    q, k = torch.randn(2, 3, 5, 4) * 3, torch.randn(2, 3, 5, 4)
    causal = torch.ones(5, 5, dtype=torch.bool).tril().expand(2, 3, 5, 5)
    stats = attention_stats(q, k, causal=True)
    max_logit, entropy = _direct(q, k, causal, 1 / math.sqrt(4))
    torch.testing.assert_close(stats["max_logit"].double(), max_logit, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close((stats["entropy_sum"] / stats["rows"]).double(), entropy, rtol=1e-5, atol=1e-5)
    # the first query sees only itself: entropy 0; a uniform row of n keys has entropy log n
    uniform = attention_stats(torch.zeros(1, 1, 4, 2), torch.zeros(1, 1, 4, 2), causal=True)
    expected = sum(math.log(n) for n in range(1, 5)) / 4
    assert float(uniform["entropy_sum"] / uniform["rows"]) == pytest.approx(expected)


def test_sdpa_padding_mask_and_a_subsample_of_queries():
    torch.manual_seed(1)
    q, k, v = torch.randn(2, 2, 6, 3), torch.randn(2, 2, 6, 3), torch.randn(2, 2, 6, 3)
    allowed = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    allowed[1, ..., 4:] = False  # the second sample's last two keys are padding
    stats = sdpa_stats((q, k, v), {"attn_mask": allowed, "scale": 0.5})
    max_logit, entropy = _direct(q, k, allowed.expand(2, 2, 6, 6), 0.5)
    torch.testing.assert_close(stats["max_logit"].double(), max_logit, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close((stats["entropy_sum"] / stats["rows"]).double(), entropy, rtol=1e-5, atol=1e-5)
    # a budget of 2 * 2 * 2 * 6 logits keeps 2 evenly spaced queries (0 and 5), causal mask kept
    small = attention_stats(q, k, causal=True, budget=48)
    index = torch.tensor([0, 5])
    causal = torch.ones(6, 6, dtype=torch.bool).tril()[index].expand(2, 2, 2, 6)
    max_logit, entropy = _direct(q[:, :, index], k, causal, 1 / math.sqrt(3))
    torch.testing.assert_close(small["max_logit"].double(), max_logit, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close((small["entropy_sum"] / small["rows"]).double(), entropy, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_entropy_matches_its_own_weights(batch_first):
    """MultiheadAttention returns its per-head attention weights: their entropy is the truth."""
    torch.manual_seed(2)
    attn = nn.MultiheadAttention(8, 2, batch_first=batch_first)
    x = torch.randn(3, 5, 8) * 2
    x_in = x if batch_first else x.transpose(0, 1)
    causal = torch.ones(5, 5, dtype=torch.bool).triu(1)  # MHA: True = not allowed
    padding = torch.zeros(3, 5, dtype=torch.bool)
    padding[2, 3:] = True
    kwargs = {"attn_mask": causal, "key_padding_mask": padding, "average_attn_weights": False}
    _, weights = attn(x_in, x_in, x_in, **kwargs)
    plogp = torch.where(weights > 0, weights * weights.log(), torch.zeros_like(weights))
    expected = (-plogp.sum(-1)).mean(dim=(0, 2))
    stats = mha_stats(attn, (x_in, x_in, x_in), kwargs)
    torch.testing.assert_close(stats["entropy_sum"] / stats["rows"], expected, rtol=1e-4, atol=1e-5)


def test_weight_bound_is_the_top_singular_value_per_head():
    torch.manual_seed(3)
    attn = nn.MultiheadAttention(8, 2)
    w_q, w_k, _ = attn.in_proj_weight.detach().chunk(3)
    expected = torch.stack([
        torch.linalg.svdvals(w_q[h * 4:(h + 1) * 4].T @ w_k[h * 4:(h + 1) * 4])[0] / 2 for h in range(2)
    ])
    generator = torch.Generator().manual_seed(0)
    state = torch.get_rng_state()
    torch.testing.assert_close(weight_bound(attn, generator), expected, rtol=1e-3, atol=1e-6)
    assert torch.equal(torch.get_rng_state(), state)
