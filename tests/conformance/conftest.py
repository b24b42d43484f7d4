"""Each idiom is spawned once per session (plain + recorded) and shared by its tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.conformance.checks import Spawned
from tests.conformance.suite import spawn


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    idioms = getattr(metafunc.cls, "idioms", None)
    if idioms and "idiom" in metafunc.fixturenames:
        metafunc.parametrize("idiom", idioms)


@pytest.fixture(scope="session")
def spawner(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Spawned]:
    cache: dict[str, Spawned] = {}

    def get(name: str) -> Spawned:
        if name not in cache:
            cache[name] = spawn(name, tmp_path_factory.mktemp(name))
        return cache[name]

    return get


@pytest.fixture
def spawned(idiom: str, spawner: Callable[[str], Spawned]) -> Spawned:
    return spawner(idiom)
