"""Every metric name the analysis can write to the metrics table, per family: the one
list ``gradscope check`` (and ``compare --fail-on``) validates rule names against, so a
typo or an invented name is an error (exit 2) rather than "missing, skipped".

A module that adds a metric adds its name here; tests/report/test_names.py runs the
analysis on recorded and synthetic runs and names every emitted metric missing here.
"""

from __future__ import annotations

METRICS: dict[str, frozenset[str]] = {
    "conflict": frozenset({
        "conflict_fraction", "cos", "cos_trend", "group_cos", "magnitude_similarity", "mgda_norm",
        "mgda_weight", "sample_cos", "group_cos_batch",
    }),
    "coherence": frozenset({
        "alpha", "alpha_unbiased", "gradient_diversity", "m_coherence", "masked_nonfinite",
        "micro_distance", "stiffness_cos", "stiffness_sign", "grad_autocorr", "grad_autocorr_se",
    }),
    "alignment": frozenset({
        "early_stop_epoch", "epoch_score", "gwa", "gwa_head", "gwa_head_all_params", "misaligned",
        # learning dynamics (gradscope/analysis/dynamics.py)
        "first_learned", "flagged", "forgetting_events", "forgotten_samples", "learned_fraction",
        "loss_p10", "loss_p50", "loss_p90", "mean_loss", "never_learned", "samples_seen",
    }),
    "noise": frozenset({
        "b_simple", "b_simple_ddp", "b_simple_ddp_raw", "b_simple_raw", "batch_size", "gsnr",
        "inner_product_test", "masked_nonfinite", "norm_test", "orthogonality_test", "gsnr_se",
        "masked_uneven_ranks",
    }),
    "stability": frozenset({
        "dead", "frozen", "grad_norm", "grad_norm_max_ratio", "grad_norm_rel", "grad_norm_spike_z",
        "grad_norm_warmup_ratio", "init_distance", "init_distance_log_slope", "loss", "loss_flip_rate",
        "loss_spike_z", "lr",
        "nonfinite", "nonfinite_samples", "update_norm", "update_ratio", "weight_norm", "update_cos",
        # clipping (gradscope/analysis/clipping.py)
        "clip_fraction", "clip_ratio", "clipped", "grad_norm_preclip", "grad_norm_preclip_spike_z",
        "tensor_spike_ratio",
        # instability probes (gradscope/analysis/probes.py)
        "act_max_abs", "act_rms", "attn_entropy_rel", "attn_max_logit", "attn_weight_bound", "dead_units",
        "hessian_trace", "hessian_trace_se", "logit_gap", "logit_log_z", "logit_max", "nlm_cos",
        "sharpness", "sharpness_edge", "sharpness_edge_ratio", "softmax_collapse", "softmax_saturated",
    }),
}


def known(family: str, name: str) -> bool:
    return name in METRICS.get(family, frozenset())
