"""Idiom 5: losses that are not a plain mean over the batch (ignore_index on a flattened LM
batch, label smoothing, mean + per-sample sum penalty in both orders, a weighted mean)."""

import numpy as np
import pytest

from tests.conformance.suite import Conformance


class TestLosses(Conformance):
    idioms = ("lm_ignore_index", "label_smoothing", "penalty_reg_first", "penalty_ce_first", "weighted_loss")


@pytest.mark.slow
def test_penalty_order_does_not_change_what_is_recorded(spawner) -> None:
    """`reg + ce` and `ce + reg` are one loss: same samples, same per_sample_scale."""
    first, second = spawner("penalty_reg_first"), spawner("penalty_ce_first")
    columns = ["step", "micro", "sample", "layer"]
    a = first.table("samples").sort_values(columns).reset_index(drop=True)
    b = second.table("samples").sort_values(columns).reset_index(drop=True)
    assert len(a) == len(b), f"rows: reg+ce {len(a)}, ce+reg {len(b)}"
    for column in ("norm2", "weight_dot"):
        if len(a):
            np.testing.assert_allclose(a[column], b[column], rtol=1e-12, err_msg=f"samples.{column}")
    for column in ("per_sample_scale", "per_sample_scale_source"):
        steps_a, steps_b = first.table("steps"), second.table("steps")
        if column in steps_a:
            assert steps_a[column].tolist() == steps_b[column].tolist(), (
                f"steps.{column} differs with the order"
            )
