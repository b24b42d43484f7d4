"""Idiom 3: spectral_norm / weight_norm (parametrizations and the legacy hooks): training
byte-identical (the power iteration must not run ahead), layers named as the user's model
names them."""

import pytest

from tests.conformance.checks import Spawned
from tests.conformance.suite import Conformance


class TestParametrize(Conformance):
    idioms = ("parametrizations", "legacy_norms")

    @pytest.mark.slow
    def test_layers_are_the_users_modules(self, spawned: Spawned) -> None:
        names = sorted(spawned.layers())
        assert names == ["0", "2"], f"{spawned.name}: meta.json layers {names}, the model's are ['0', '2']"
