"""The stability family reads the PROBES table: metrics and findings on synthetic tables."""

import pandas as pd

from gradscope.analysis.probes import probe_findings, probe_metrics
from gradscope.analysis.stability import stability_metrics, stability_verdict


def _rows(entries):
    return pd.DataFrame(entries, columns=["step", "rank", "layer", "probe", "key", "value"])


def _attention(steps, logits, entropy, log_keys=2.0):
    entries = []
    for step, top, ent in zip(steps, logits, entropy):
        entries += [(step, 0, "blocks.0.attn", "attention", "max_logit.h0", top),
                    (step, 0, "blocks.0.attn", "attention", "max_logit.h1", 1.0),
                    (step, 0, "blocks.0.attn", "attention", "entropy.h0", ent),
                    (step, 0, "blocks.0.attn", "attention", "entropy.h1", 1.5),
                    (step, 0, "blocks.0.attn", "attention", "log_keys", log_keys)]
    return entries


def test_attention_growth_and_entropy_collapse_are_found_with_their_steps():
    probes = _rows(_attention(range(6), [2, 4, 10, 40, 90, 200], [1.8, 1.6, 1.0, 0.5, 0.1, 0.05]))
    rows = probe_metrics(probes)
    top = rows[(rows["name"] == "attn_max_logit") & (rows["scope"] == "layer")]["value"].tolist()
    assert top == [2, 4, 10, 40, 90, 200]
    relative = rows[(rows["name"] == "attn_entropy_rel") & (rows["scope"] == "layer")]["value"]
    assert relative.tolist() == [0.75, 0.75, 0.5, 0.25, 0.05, 0.025]  # min over heads of entropy / log_keys
    found = {f[2]: f for f in probe_findings(rows)}
    assert found["attn_max_logit"][5] == (3, 4, 5)  # >= 30 and >= 3x the first value
    assert found["attn_entropy_rel"][5] == (4, 5)
    assert "attention logit growth in blocks.0.attn" in found["attn_max_logit"][1]


def test_a_head_born_sharp_is_not_growth():
    probes = _rows(_attention(range(4), [40, 41, 42, 43], [0.1, 0.1, 0.1, 0.1]))
    assert probe_findings(probe_metrics(probes)) == []


def test_dead_units_softmax_collapse_and_sharpness_in_the_verdict():
    entries = []
    for step in range(4):
        entries += [(step, 0, "fc2", "activation", "dead_frac", 0.75),
                    (step, 0, "head", "logits", "collapse_frac", 0.25 if step >= 2 else 0.0),
                    (step, 0, "", "curvature", "lambda_max", 50.0),
                    (step, 0, "", "curvature", "edge", 20.0),
                    (step, 0, "", "curvature", "edge_ratio", 2.5 if step == 3 else 0.5)]
    steps = pd.DataFrame({"step": range(4), "rank": 0, "loss": [1.0, 0.9, 0.8, 0.7], "grad_norm": 1.0})
    verdict = stability_verdict(stability_metrics(steps, None, None, _rows(entries)))
    assert verdict.level == "warn"
    assert verdict.metric == "stability.sharpness_edge_ratio" and verdict.steps == (3,)
    text = "\n".join(verdict.details)
    assert "dead units in fc2's input" in text and "softmax collapse in head's logits" in text


def test_no_probes_table_changes_nothing():
    steps = pd.DataFrame({"step": range(3), "rank": 0, "loss": [1.0, 0.9, 0.8], "grad_norm": 1.0})
    assert stability_metrics(steps, None).equals(stability_metrics(steps, None, None, None))
    assert len(probe_metrics(None)) == 0
