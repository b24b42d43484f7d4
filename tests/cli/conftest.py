"""The report tests' synthetic runs, shared with the CLI tests."""

from tests.report.conftest import calm_run, synthetic_run  # noqa: F401
