"""Every threshold gradscope judges by, in one place, each with its cited basis.

The verdicts (gradscope/analysis/*), the report's plots and HTML text and the CI profiles
(configs/*.toml, checked against ``GATES`` by tests/report/test_thresholds.py) read these
values; nothing else spells a threshold. DESIGN.md section 6, "Thresholds with a cited
basis", lists the sources.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Band:
    """A healthy range [low, high] and the rule of thumb it surrounds."""

    low: float
    high: float
    centre: float
    source: str

    def text(self) -> str:
        return f"{self.low:g}..{self.high:g} (around {self.centre:g})"


# --- stability: robust z-scores (Stable-SPAM; Wortsman et al. 2023, small-scale proxies) -----
SPIKE_Z = 6.0  # robust z above which a loss / grad-norm value is a spike (the verdict warns)
SPIKE_Z_GATE = 2 * SPIKE_Z  # configs/default.toml fails only at twice the warning level
WINDOW = 20  # trailing steps for the rolling median / MAD and the loss flip rate
# Previous values needed before a z-score. On 40 i.i.d. noisy mini-batch gradient norms the
# MAD of only 5 values gave a z > 6 "spike" in 10% of runs; 10 values on the log scale gave
# 0.3-1.3% (simulation in docs/clinic.md). A score exists from step MIN_HISTORY + 1 on.
MIN_HISTORY = 10
# The first MIN_HISTORY steps are scored by their ratio to the median of the steps before
# them (gradscope.analysis.warmup): two decades (Stable-SPAM: real spikes are 50-1000x).
WARMUP_SPIKE_RATIO = 100.0
MIN_STEPS = 2  # fewer recorded steps: spikes, dead / frozen layers and trends cannot be judged

# --- stability: update / weight ratio |dW| / |W| -------------------------------------------
# Karpathy's ~1e-3 (CS231n, "ratio of weights:updates"; Cockpit's update-size instrument).
# The verdict warns two decades either side: one decade flagged every healthy twin in
# tests/clinic (tiny nets trained briefly run at 1e-2..5e-2 in the head, deep ReLU nets at
# ~1e-4 in the first layer); 1e-1 rewrites a layer in ~10 steps, 1e-5 leaves it unchanged
# over ~1e5 steps. configs/strict.toml keeps a reference recipe one decade either side.
UPDATE_RATIO = Band(1e-5, 1e-1, 1e-3, "Karpathy (CS231n) ~1e-3, two decades either side")
UPDATE_RATIO_STRICT = Band(1e-4, 1e-2, 1e-3, "Karpathy (CS231n) ~1e-3, one decade either side")

# --- stability: vanishing / exploding layers (Pascanu et al. 2013) -------------------------
VANISH, EXPLODE = 1e-3, 1e3  # a layer's median grad norm relative to the step's median layer

# --- coherence: m-coherence against 1 (Chatterjee & Zielinski 2022) ------------------------
M_COHERENCE_MIN = 1.1  # 1 = orthogonal per-sample gradients; 10% margin for S1/S2 noise
M_COHERENCE_GATE = 1.0  # configs/strict.toml: the paper's line itself

# --- noise: batch size against B_simple (McCandlish et al. 2018) --------------------------
NOISE_FACTOR = 10.0  # warn when batch > 10 B_simple (compute wasted) or < B_simple / 10

# --- conflict: task cosine (PCGrad cos < 0; GCond zones) ----------------------------------
CONFLICT_COS = 0.0
STRONG_CONFLICT, SEVERE_CONFLICT = -0.5, -0.8

# --- alignment: GWA epoch score (Hölzl et al. 2025) ---------------------------------------
GWA_DROP = 0.1  # warn when the last epoch's score is below the best by 10% of |best|
MIN_EPOCHS = 2  # an epoch score can only fall from a peak with two epochs

# How much history a metric needs before it has a value: (unit, count). ``check`` skips a
# rule on such a metric when the run has less, and says so.
HISTORY: dict[str, tuple[str, int]] = {
    "stability.loss_spike_z": ("steps", MIN_HISTORY + 1),
    "stability.grad_norm_spike_z": ("steps", MIN_HISTORY + 1),
    "stability.grad_norm_max_ratio": ("steps", 2),
    "stability.loss_flip_rate": ("steps", 3),
    "stability.init_distance_log_slope": ("steps", 3),
}

# The thresholds of configs/<profile>.toml, rule text without its number -> value.
GATES: dict[str, dict[str, float]] = {
    "default": {
        "stability.nonfinite.max ==": 0.0,
        "stability.loss_spike_z.max <": SPIKE_Z_GATE,
        "stability.grad_norm_spike_z.max <": SPIKE_Z_GATE,
        "stability.update_ratio[layer=*].median <": UPDATE_RATIO.high,
        "conflict.cos[task_pair=*].median >": SEVERE_CONFLICT,
    },
    "strict": {
        "stability.nonfinite.max ==": 0.0,
        "stability.loss_spike_z.max <": SPIKE_Z,
        "stability.grad_norm_spike_z.max <": SPIKE_Z,
        "stability.update_ratio[layer=*].median <": UPDATE_RATIO_STRICT.high,
        "stability.update_ratio[layer=*].median >": UPDATE_RATIO_STRICT.low,
        "stability.grad_norm_rel[layer=*].median >": VANISH,
        "stability.grad_norm_rel[layer=*].median <": EXPLODE,
        "conflict.cos[task_pair=*].median >": CONFLICT_COS,
        "conflict.cos[task_pair=*].min >": SEVERE_CONFLICT,
        "coherence.m_coherence.median >": M_COHERENCE_GATE,
    },
}

# --- stability: instability probes (docs/probes.md) -------------------------------------------
# Attention logit growth (Wortsman et al. 2023): a head's max |q.k|/sqrt(d) both large in
# absolute terms (softmax weights e^-30 ~ 1e-13 apart: one-hot in practice) and grown
# ATTN_GROWTH-fold over its first recorded value (a head born sharp is not "growth").
ATTN_LOGIT = 30.0
ATTN_GROWTH = 3.0
# Entropy collapse (Zhai et al. 2023): a head's mean entropy below 10% of a uniform row's
# (log of the keys it sees), after starting above three times that.
ENTROPY_COLLAPSE = 0.1
# Dead units: half of a layer's input units zero for every sample and position of a recorded
# batch (dying ReLU), on 2+ recorded steps.
DEAD_UNITS = 0.5
# Softmax collapse (Prieto et al. 2025): any sample whose softmax is exactly one-hot in the
# training dtype, on 2+ recorded steps.
SOFTMAX_COLLAPSE = 0.0
# Sharpness at or past the edge of stability (Cohen et al. 2021, 2022): lambda_max / edge >= 1.
EDGE_RATIO = 1.0
