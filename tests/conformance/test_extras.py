"""Idioms found beyond the issue's list: a module used twice per forward (Opacus #578) and
backward on a per-sample loss vector with weights as its gradient."""

from tests.conformance.suite import Conformance


class TestExtras(Conformance):
    idioms = ("shared_module", "nonscalar_backward")
