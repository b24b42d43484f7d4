"""Idioms 9 and 10: sparse embeddings (SGD; SparseAdam + Adam) and modules whose batch is
not the loss's batch (multiple-instance learning, EmbeddingBag with offsets)."""

import pytest

from tests.conformance.suite import Conformance


class TestBatchMismatch(Conformance):
    idioms = ("sparse_embedding", "sparse_adam", "mil", "embedding_bag")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sparse_embedding", "sparse_adam"])
def test_sparse_gradients_warn_in_one_line_at_most(spawner, name) -> None:
    run = spawner(name)
    extra = [line for line in run.recorded.stderr.splitlines() if line not in run.plain.stderr.splitlines()]
    assert "Traceback" not in run.recorded.stderr, run.recorded.stderr[-2000:]
    assert len(extra) <= 1, f"{name}: {len(extra)} new stderr lines under record:\n" + "\n".join(extra[:10])
