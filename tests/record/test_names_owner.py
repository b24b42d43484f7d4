"""A module that runs without its holder is named from the holder (names.outermost_holder)."""

from __future__ import annotations

import torch
from torch import nn

from gradscope.record.names import ModuleNames, holder, outermost_holder


class Autoencoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 2), nn.Tanh())
        self.decoder = nn.Linear(2, 4)


def test_parts_run_on_their_own_are_named_from_the_model() -> None:
    model, names = Autoencoder(), ModuleNames()
    x = torch.randn(3, 4)
    names.add_running(model.encoder)  # the loop calls model.encoder(x), then model.decoder(z)
    model.decoder(model.encoder(x))
    names.add_running(model.decoder)
    assert names.module(model.encoder[0]) == "encoder.0" and names.module(model.decoder) == "decoder"
    assert names.param(model.decoder.weight) == ("decoder", "decoder.weight")


def test_a_shared_or_unheld_module_is_its_own_root() -> None:
    shared = nn.Linear(2, 2)
    first, second = nn.Sequential(shared), nn.Sequential(shared)
    assert holder(shared) is None and outermost_holder(shared) is shared  # two holders: ambiguous
    assert holder(first) is None and second[0] is shared
    names = ModuleNames()
    assert names.add_running(nn.Linear(2, 2))
