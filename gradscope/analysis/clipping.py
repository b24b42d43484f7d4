r"""Gradient clipping and the spikes it hides, from the pre-clip norm.

``clip_grad_norm_(params, c)`` rescales the gradient before the optimizer's pre-hook reads
STEPS.grad_norm, so under clipping that column reads c on every clipped step, spikes
included. STEPS.grad_norm_preclip is the norm at the end of the step's last backward,
before any clipping; LAYERS.sum_norm2 is each tensor's pre-clip ||g||^2. Rows (all scope
model unless said):

- ``grad_norm_preclip`` and ``grad_norm_preclip_spike_z``: the pre-clip norm and its
  robust z-score on the log scale (``stability.robust_z``, as for grad_norm).
- ``clip_ratio`` = grad_norm / grad_norm_preclip (1 unclipped, c / ||g|| clipped), and
  ``clipped`` (1 when post < pre by more than 1e-4 relative: float rounding of an
  unclipped gradient stays well inside); ``clip_fraction`` (step -1): the share of steps
  with both norms that were clipped.
- ``tensor_spike_ratio`` (scope param): Stable-SPAM's per-tensor view of spikes (Huang et
  al. 2025, "Stable-SPAM: How to Train in 4-Bit More Stably than 16-Bit Adam", AdaGN keeps
  an exponential moving average of each tensor's gradient norm; SPAM, Huang et al. 2025,
  flags spikes as gradients far above their running second moment). Here

  .. math::
      r_t = \frac{\|g_t\|}{\sqrt{\hat v_{t-1}}},\quad
      v_t = \beta v_{t-1} + (1 - \beta)\|g_t\|^2,\quad \hat v_t = v_t / (1 - \beta^{t+1}),

  \beta = 0.9 over the tensor's recorded steps, pre-clip. r is about 1 on steady training;
  a spike reads its size against the recent scale. NaN until MIN_HISTORY previous values.
  The model row per step is the largest r over tensors; param rows are kept only for
  tensors with r > TENSOR_SPIKE (the spikes), so a long run's rows stay few.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from gradscope.analysis.coherence import has_columns, tidy
from gradscope.analysis.thresholds import MIN_HISTORY

CLIP_TOLERANCE = 1e-4  # relative: post < pre (1 - tol) counts as clipped
EMA_BETA = 0.9  # tensor norm^2 moving average (Stable-SPAM's AdaGN keeps such EMAs)
TENSOR_SPIKE = 10.0  # r above which a tensor's gradient is a spike (SPAM: spikes are 50-1000x)


def clip_rows(steps: pd.DataFrame | None, robust_z: Callable[..., pd.Series]) -> list[pd.DataFrame]:
    """grad_norm_preclip, its spike z, clip_ratio, clipped and clip_fraction."""
    if not has_columns(steps, "step", "grad_norm_preclip"):
        return []
    frame = steps.sort_values("step").drop_duplicates("step").reset_index(drop=True)
    pre = frame["grad_norm_preclip"].astype(float)
    if not pre.notna().any():
        return []
    frame = frame.assign(pre=pre, z=robust_z(pre, log=True))
    parts = [tidy(frame, "grad_norm_preclip", "pre"), tidy(frame, "grad_norm_preclip_spike_z", "z")]
    if "grad_norm" in frame:
        post = frame["grad_norm"].astype(float)
        both = frame.assign(ratio=post / pre.where(pre > 0))[pre.notna() & post.notna() & (pre > 0)]
        both = both.assign(clipped=(both["ratio"] < 1 - CLIP_TOLERANCE).astype(float))
        parts += [tidy(both, "clip_ratio", "ratio"), tidy(both, "clipped", "clipped")]
        if len(both):
            share = pd.DataFrame({"step": [-1], "v": [float(both["clipped"].mean())]})
            parts.append(tidy(share, "clip_fraction", "v"))
    return parts


def tensor_spike_ratios(layers: pd.DataFrame, beta: float = EMA_BETA) -> pd.DataFrame:
    """step, param, ratio: r_t of each parameter tensor's pre-clip norm (module docstring)."""
    frame = layers[["step", "param", "sum_norm2"]].dropna().sort_values(["param", "step"], kind="stable")
    out = []
    for param, block in frame.groupby("param", sort=False):
        norm2 = block["sum_norm2"].to_numpy(np.float64)
        ratio = np.full(len(norm2), np.nan)
        v = 0.0
        for t, value in enumerate(norm2):
            if t >= MIN_HISTORY and v > 0:
                ratio[t] = np.sqrt(value / (v / (1 - beta**t)))
            v = beta * v + (1 - beta) * value
        out.append(pd.DataFrame({"step": block["step"].to_numpy(), "param": param, "ratio": ratio}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["step", "param", "ratio"])


def tensor_spike_rows(layers: pd.DataFrame | None) -> list[pd.DataFrame]:
    """tensor_spike_ratio: the max over tensors per step, and the tensors above TENSOR_SPIKE."""
    if not has_columns(layers, "step", "param", "sum_norm2"):
        return []
    ratios = tensor_spike_ratios(layers).dropna(subset=["ratio"])
    if not len(ratios):
        return []
    top = ratios.groupby("step", as_index=False)["ratio"].max()
    spikes = ratios[ratios["ratio"] > TENSOR_SPIKE]
    return [tidy(top, "tensor_spike_ratio", "ratio"),
            tidy(spikes, "tensor_spike_ratio", "ratio", scope="param", key="param")]


Finding = tuple[str, str, str, float, float, tuple[int, ...]]


def clip_findings(rows: pd.DataFrame, spike_z: float) -> list[Finding]:
    """(level, text, metric, value, threshold, steps): pre-clip spikes (naming those the
    clipping hid from grad_norm) and tensor spikes."""
    found = []
    pre = rows[(rows["name"] == "grad_norm_preclip_spike_z") & (rows["value"] > spike_z)]
    if len(pre):
        clipped = rows[(rows["name"] == "clipped") & (rows["value"] > 0)]["step"]
        hidden = pre["step"].isin(clipped)
        text = "grad-norm spikes"
        if hidden.any():
            text += f" before clipping ({int(hidden.sum())} hidden by it: the optimizer saw the clipped norm)"
        steps = tuple(int(s) for s in pre["step"])
        found.append(("warn", text, "grad_norm_preclip_spike_z", float(pre["value"].max()), spike_z, steps))
    tensors = rows[(rows["name"] == "tensor_spike_ratio") & (rows["scope"] == "param")]
    if len(tensors):
        worst = tensors.loc[tensors["value"].idxmax()]
        text = (f"gradient spike in {worst['key']} ({worst['value']:.3g}x its running scale; "
                f"{tensors['key'].nunique()} tensors spiked)")
        steps = tuple(sorted({int(s) for s in tensors["step"]}))
        found.append(("warn", text, "tensor_spike_ratio", float(worst["value"]), TENSOR_SPIKE, steps))
    return found


__all__ = ["clip_findings", "clip_rows", "tensor_spike_ratios", "tensor_spike_rows"]
