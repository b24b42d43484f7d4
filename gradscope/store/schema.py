"""Arrow schemas of the run directory, format v1 (see docs/run-format.md).

Every table is a folder of Parquet shards, one sub-folder per rank:
``RUN/<table>/rank-<R>/part-<NNNNNN>.parquet``. Rows carry their ``rank`` too, so a
dataset over the whole table needs no partition parsing.

Per-sample quantities are stored in the per-sample-loss convention: ``g_i`` is the
gradient of sample i's own loss, whatever reduction the user's loss used (the
factor applied is the step's ``per_sample_scale``).
"""

from __future__ import annotations

import pyarrow as pa

FORMAT_VERSION = 1

# One row per optimizer step (or per backward pass when the script has no optimizer).
STEPS = pa.schema(
    [
        ("step", pa.int64()),  # 0-based step index within this rank
        ("rank", pa.int32()),
        ("optimizer", pa.int32()),  # index of the optimizer that stepped (order first seen), -1 none
        ("wall_time", pa.float64()),  # seconds since the recorder started, at the step's end
        ("step_time", pa.float64()),  # seconds since the previous step's end (NaN for the first)
        ("recorder_time", pa.float64()),  # seconds the recorder itself spent on this step
        ("loss", pa.float64()),  # sum over the step's backward calls (first call for closures)
        ("backward_calls", pa.int32()),
        ("batch_size", pa.int32()),  # samples seen by per-sample hooks in the step, -1 unknown
        ("skipped", pa.bool_()),  # a GradScaler skipped the optimizer step (inf/nan grads)
        ("recorded", pa.bool_()),  # per-layer and per-sample statistics recorded this step
        ("grad_norm", pa.float64()),  # global L2 norm of all gradients the optimizer sees
        ("loss_scale", pa.float64()),  # GradScaler scale, NaN without one
        ("per_sample_scale", pa.float64()),  # hook gradient * this = per-sample-loss gradient
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
        # ||sum_i g_i||^2 over all samples of the step, per-sample-loss convention, measured
        # at the end of the step's last backward (before clipping); NaN when unknown
        ("sum_norm2", pa.float64()),
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
        ("norm2", pa.float64()),  # ||g_i||^2 over the layer's parameters
        ("weight_dot", pa.float64()),  # <g_i, W> over the layer's parameters (W before the step)
        ("loss", pa.float64()),  # per-sample loss when known, else NaN
        ("group", pa.int64()),  # sample group label from gradscope.groups(), -1 none
        ("sketch", pa.list_(pa.float32())),  # seeded random projection of g_i (fixed length)
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
        ("values", pa.list_(pa.float64())),  # row-major B x B, K_ij = <g_i, g_j>
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

TABLES: dict[str, pa.Schema] = {
    "steps": STEPS,
    "layers": LAYERS,
    "samples": SAMPLES,
    "gram": GRAM,
    "tasks": TASKS,
    "task_samples": TASK_SAMPLES,
}


def type_mismatch(actual: pa.Schema, expected: pa.Schema) -> str | None:
    """Why a shard's columns do not match the table's schema (None when they do).

    List columns compare by value type (the list's field name varies between writers);
    integers of any width are accepted for integers, floats for floats (read with a
    checked cast, which fails on overflow)."""
    for name in expected.names:
        index = actual.get_field_index(name)
        if index < 0:
            return f"lacks column {name}"
        have, want = actual.field(index).type, expected.field(name).type
        if pa.types.is_list(have) and pa.types.is_list(want):
            have, want = have.value_type, want.value_type
        same_kind = any(kind(have) and kind(want) for kind in (pa.types.is_integer, pa.types.is_floating))
        if not (have.equals(want) or same_kind):
            return f"column {name} is {have}, expected {want}"
    return None
