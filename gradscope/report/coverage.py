"""Per-layer per-sample coverage, from what the recorder says it wrote.

meta.json's "layers" entries (format v2) carry ``rows_steps`` (steps with per-sample
rows for the layer), ``first_step`` / ``last_step`` and ``reasons`` ({reason: count} of
steps without rows). A layer is covered only when it has rows: ``rows_steps > 0``,
whatever its ``covered`` flag says. Older runs (v1) have only ``covered`` and ``reason``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class LayerCoverage:
    name: str
    type: str
    numel: int
    method: str
    covered: bool
    note: str  # "rows at 240 steps (0-239)", or why there are none


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _reasons(entry: Mapping[str, Any]) -> str:
    reasons = entry.get("reasons")
    if not isinstance(reasons, Mapping) or not reasons:
        return str(entry.get("reason") or "")
    ordered = sorted(reasons.items(), key=lambda kv: -_int(kv[1]))
    return "; ".join(f"{reason} ({_int(count)} steps)" for reason, count in ordered)


def entry_coverage(entry: Mapping[str, Any]) -> LayerCoverage:
    """One meta.json layer entry, read defensively (any field may be absent)."""
    name, kind = str(entry.get("name") or "(root)"), str(entry.get("type") or "")
    numel, method = _int(entry.get("numel")), str(entry.get("method") or "")
    if "rows_steps" in entry:
        rows = _int(entry.get("rows_steps"))
        why = _reasons(entry)
        if rows <= 0:
            return LayerCoverage(name, kind, numel, method, False, f"no rows recorded: {why or 'no kernel'}")
        span = f"{entry.get('first_step')}-{entry.get('last_step')}"
        note = f"rows at {rows} steps ({span})" + (f"; missing: {why}" if why else "")
        return LayerCoverage(name, kind, numel, method, True, note)
    covered = bool(entry.get("covered"))
    note = "" if covered else str(entry.get("reason") or "no kernel")
    return LayerCoverage(name, kind, numel, method, covered, note)


NO_METHOD = ("", "none")


def layer_coverage(meta: Mapping[str, Any]) -> list[LayerCoverage]:
    """Every layer entry; a covered layer without a method of its own (an
    nn.MultiheadAttention's ``out_proj``, whose weight the parent uses functionally and
    whose per-sample rows the parent's method writes) gets its nearest ancestor's method,
    "fallback (via attn)", so the report and ``record``'s summary count it as covered."""
    layers = [entry_coverage(e) for e in meta.get("layers") or [] if isinstance(e, Mapping)]
    methods = {layer.name: layer.method for layer in layers if layer.method not in NO_METHOD}
    out = []
    for layer in layers:
        parent = _ancestor(layer.name, methods) if layer.covered and layer.method in NO_METHOD else None
        out.append(replace(layer, method=f"{methods[parent]} (via {parent})") if parent else layer)
    return out


def _ancestor(name: str, methods: Mapping[str, str]) -> str | None:
    parts = name.split(".")
    for end in range(len(parts) - 1, 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in methods:
            return candidate
    return None


def coverage_by_method(layers: list[LayerCoverage]) -> dict[str, float]:
    """Fraction of the parameters with per-sample rows, per method ("none" for the rest)."""
    total = sum(layer.numel for layer in layers) or 1
    shares: dict[str, float] = {}
    for layer in layers:
        method = layer.method.split(" (via ")[0] if layer.covered else "none"
        if layer.covered and method in NO_METHOD:
            method = "covered, no method named"
        shares[method] = shares.get(method, 0.0) + layer.numel / total
    return dict(sorted(shares.items()))
