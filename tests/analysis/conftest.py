"""Analysis tests run with failures raised: a family that crashes fails its test instead of
turning into a FAILED verdict that an assertion on levels might overlook."""

from __future__ import annotations

import pytest

from gradscope.analysis.engine import RAISE_ENV


@pytest.fixture(autouse=True)
def _raise_analysis_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RAISE_ENV, "1")
