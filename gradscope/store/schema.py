"""Arrow schemas of the run directory, format v2 (see docs/run-format.md).

Every table is a folder of Parquet shards, one sub-folder per rank:
``RUN/<table>/rank-<R>/part-<NNNNNN>.parquet``. Rows carry their ``rank`` too, so a
dataset over the whole table needs no partition parsing.

Per-sample quantities (v2) are each sample's exact contribution ``c_i`` to the gradient the
optimizer sees: the hook gradients of the batch loss, divided by the GradScaler scale, so
sum_i c_i over the step's micro-batches = p.grad. The per-sample-loss gradient is
``g_i = f c_i`` with f the step's ``per_sample_scale`` (``per_sample_scale_source`` says
whether f was declared, read exactly from the loss graph, or assumed). v1 runs stored
``f c_i``: ratios (cosines, coherence, noise scale) read the same from both.
"""

from __future__ import annotations

from collections.abc import Collection

import pyarrow as pa

FORMAT_VERSION = 2

# One row per optimizer step (or per backward pass when the script has no optimizer).
STEPS = pa.schema(
    [
        ("step", pa.int64()),  # 0-based step index within this rank
        ("rank", pa.int32()),
        ("optimizer", pa.int32()),  # index of the optimizer that stepped (order first seen), -1 none
        ("wall_time", pa.float64()),  # seconds since the recorder started, at the step's end
        ("step_time", pa.float64()),  # seconds since the previous step's end (NaN for the first)
        ("recorder_time", pa.float64()),  # seconds the recorder itself spent on this step
        # the script's (unscaled) loss summed over the step's micro-batch backward calls;
        # of closure evaluations only the first counts
        ("loss", pa.float64()),
        ("backward_calls", pa.int32()),
        ("batch_size", pa.int32()),  # samples seen by per-sample hooks in the step, -1 unknown
        ("skipped", pa.bool_()),  # a GradScaler skipped the optimizer step (inf/nan grads)
        ("recorded", pa.bool_()),  # per-layer and per-sample statistics recorded this step
        ("grad_norm", pa.float64()),  # global L2 norm of all gradients the optimizer sees
        # global L2 norm of the unscaled gradient at the end of the step's last backward
        # (before any clip_grad_norm_): sqrt(sum of LAYERS.sum_norm2); NaN unknown
        ("grad_norm_preclip", pa.float64()),
        ("loss_scale", pa.float64()),  # GradScaler scale, NaN without one
        ("per_sample_scale", pa.float64()),  # f: g_i = f c_i; NaN unknown or micro-batches differ
        ("per_sample_scale_source", pa.string()),  # "declared" | "read" | "assumed"; "" none (v2)
        ("hparams", pa.string()),  # JSON list, one object per param group (lr, momentum, ...)
    ]
)

# One row per (recorded step, parameter tensor). Layer-level values are the L2
# combination over a layer's parameters (sqrt of the sum of squares).
LAYERS = pa.schema(
    [
        ("step", pa.int64()),
        ("rank", pa.int32()),
        ("layer", pa.string()),  # qualified module name, "" for parameters of the root
        ("param", pa.string()),  # qualified parameter name
        ("grad_norm", pa.float64()),  # as the optimizer sees it (after GradScaler unscale)
        ("weight_norm", pa.float64()),  # before the step
        ("update_norm", pa.float64()),  # ||W_after - W_before||
        ("init_distance", pa.float64()),  # ||W_before - W_0||, W_0 the first weights seen
        ("nonfinite", pa.bool_()),  # gradient holds inf or nan
        # ||sum_i c_i||^2 = ||p.grad||^2 (unscaled) at the end of the step's last recorded
        # backward (before clipping); NaN when unknown. v1: f^2 times that
        ("sum_norm2", pa.float64()),
        # DDP: ||sum_i c_i||^2 of this rank's own samples, before the all-reduce (sum_norm2 is
        # then the all-reduced gradient's); NaN when not under DDP or unknown
        ("local_norm2", pa.float64()),
        # seeded count sketch (k = 64) of W_after - W_before, the same projection every step
        # for a given parameter (gradscope/record/update_sketch.py); null when not recorded
        ("update_sketch", pa.list_(pa.float32())),
    ]
)

# One row per (recorded step, backward call, sample, layer).
SAMPLES = pa.schema(
    [
        ("step", pa.int64()),
        ("rank", pa.int32()),
        ("micro", pa.int32()),  # index of the backward call within the step
        ("sample", pa.int32()),  # index of the sample within that backward's batch
        ("layer", pa.string()),
        ("norm2", pa.float64()),  # ||c_i||^2 over the layer's parameters (v1: ||f c_i||^2)
        ("weight_dot", pa.float64()),  # <c_i, W> over the layer's parameters (W before the step)
        # the sample's loss as the criterion's reduction="none" gives it (mean over its
        # non-batch elements): declared (gradscope.losses) or read exactly from the loss graph; NaN unknown
        ("loss", pa.float64()),
        ("group", pa.int64()),  # sample group label from gradscope.groups(), -1 none
        ("sketch", pa.list_(pa.float32())),  # seeded random projection of c_i (fixed length)
        # dataset index: the DataLoader sampler's, or declared by gradscope.indices(); -1 unknown
        ("index", pa.int64()),
        # norm2 and weight_dot over the layer's parameter named "weight" alone (bias and
        # others excluded: GWA's head score); NaN when the layer has none
        ("norm2_w", pa.float64()),
        ("weight_dot_w", pa.float64()),
    ]
)

# One row per (recorded step, backward call, layer): the B x B per-sample Gram.
GRAM = pa.schema(
    [
        ("step", pa.int64()),
        ("rank", pa.int32()),
        ("micro", pa.int32()),
        ("layer", pa.string()),
        ("size", pa.int32()),  # B
        ("exact", pa.bool_()),  # False: estimated from sketches
        ("values", pa.list_(pa.float64())),  # row-major B x B, K_ij = <c_i, c_j>
    ]
)

# One row per (recorded step, layer): the K x K Gram of named task gradients.
TASKS = pa.schema(
    [
        ("step", pa.int64()),
        ("rank", pa.int32()),
        ("layer", pa.string()),
        ("tasks", pa.list_(pa.string())),  # K task names, in order
        ("values", pa.list_(pa.float64())),  # row-major K x K, G_ab = <g_a, g_b>
    ]
)

# One row per (recorded step, sample, layer, task pair) from per-sample task losses.
TASK_SAMPLES = pa.schema(
    [
        ("step", pa.int64()),
        ("rank", pa.int32()),
        ("sample", pa.int32()),
        ("layer", pa.string()),
        ("task_a", pa.string()),
        ("task_b", pa.string()),
        ("dot", pa.float64()),  # <g_i^a, g_i^b>
        ("norm2_a", pa.float64()),
        ("norm2_b", pa.float64()),
    ]
)

# One row per (recorded step, layer, probe, key): instability probes (docs/probes.md).
# probe: "attention" | "logits" | "activation" | "curvature"; key: the quantity, with a
# ".h<i>" suffix for head i (attention). layer "" for curvature (the model) or when the
# module that produced the logits is unknown.
PROBES = pa.schema(
    [
        ("step", pa.int64()),
        ("rank", pa.int32()),
        ("layer", pa.string()),
        ("probe", pa.string()),
        ("key", pa.string()),
        ("value", pa.float64()),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "steps": STEPS,
    "layers": LAYERS,
    "samples": SAMPLES,
    "gram": GRAM,
    "tasks": TASKS,
    "task_samples": TASK_SAMPLES,
    "probes": PROBES,
}

# Columns a run of an older format may lack: the reader fills them with nulls.
ADDED: dict[str, dict[str, int]] = {
    "steps": {"per_sample_scale_source": 2, "grad_norm_preclip": 2},
    "layers": {"local_norm2": 2, "update_sketch": 2},
    "samples": {"index": 2, "norm2_w": 2, "weight_dot_w": 2},
}

def type_mismatch(actual: pa.Schema, expected: pa.Schema, added: Collection[str] = ()) -> str | None:
    """Why a shard's columns do not match the table's schema (None when they do).

    List columns compare by value type (the list's field name varies between writers);
    integers of any width are accepted for integers, floats for floats (read with a
    checked cast, which fails on overflow)."""
    for name in expected.names:
        index = actual.get_field_index(name)
        if index < 0:
            if name in added:
                continue  # a column of a later format: read as nulls
            return f"lacks column {name}"
        have, want = actual.field(index).type, expected.field(name).type
        if pa.types.is_list(have) and pa.types.is_list(want):
            have, want = have.value_type, want.value_type
        same_kind = any(kind(have) and kind(want) for kind in (pa.types.is_integer, pa.types.is_floating))
        if not (have.equals(want) or same_kind):
            return f"column {name} is {have}, expected {want}"
    return None
