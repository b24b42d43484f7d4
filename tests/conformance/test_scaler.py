"""Idiom 4: GradScaler on CPU, with bfloat16 autocast and without: the loss and the
per-sample contributions unscaled (the scripts' losses are the unscaled ones)."""

from tests.conformance.suite import Conformance


class TestScaler(Conformance):
    idioms = ("scaler_autocast", "scaler_plain")
