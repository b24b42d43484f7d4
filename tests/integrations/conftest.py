"""Helpers for the trainer integration tests: skip (saying why) where a trainer does not import."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
# Columns that are timings (differ run to run) or depend on the process: not compared.
TIMINGS = {"wall_time", "step_time", "recorder_time"}


def import_or_skip(module: str, attribute: str | None = None):
    """The module, or a skip with the one-line reason (a missing package, or one that fails
    to import, such as a torchvision built for another torch). ``attribute`` is loaded too
    (transformers imports its classes lazily)."""
    try:
        loaded = importlib.import_module(module)
        if attribute is not None:
            getattr(loaded, attribute)
        return loaded
    except Exception as err:  # noqa: BLE001 - any import failure is the environment's
        first = (str(err).strip().splitlines() or [""])[0]
        pytest.skip(f"{module} does not import here ({type(err).__name__}: {first})")


def same_table(a: pd.DataFrame, b: pd.DataFrame, keys: list[str], rtol: float = 1e-6) -> None:
    """Two run tables hold the same rows: equal keys, equal non-float columns, floats within rtol
    (NaN equal to NaN), timings left out."""
    a = a.drop(columns=[c for c in TIMINGS if c in a]).sort_values(keys).reset_index(drop=True)
    b = b.drop(columns=[c for c in TIMINGS if c in b]).sort_values(keys).reset_index(drop=True)
    assert list(a.columns) == list(b.columns) and len(a) == len(b) > 0
    for column in a.columns:
        left, right = a[column], b[column]
        if left.dtype.kind == "f":
            np.testing.assert_allclose(left, right, rtol=rtol, atol=1e-12, err_msg=column)
        elif left.dtype == object and len(left) and isinstance(left.iloc[0], (list, np.ndarray)):
            for x, y in zip(left, right):
                np.testing.assert_allclose(np.asarray(x, float), np.asarray(y, float), rtol=rtol, atol=1e-6)
        else:
            assert left.tolist() == right.tolist(), column
