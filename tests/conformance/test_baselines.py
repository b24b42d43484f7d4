"""Plain baselines (optimizer + mean loss, accumulation, LBFGS closure) and idiom 1 (no
optimizer, weights updated through .data): the suite must be able to pass."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from tests.conformance import reference
from tests.conformance.suite import Conformance


class TestBaselines(Conformance):
    idioms = ("baseline_mean", "baseline_accumulate", "baseline_lbfgs", "manual_data_sgd")


def test_reference_matches_torch_func_for_a_mean_loss() -> None:
    """For a mean loss c_i = g_i / B, g_i from torch.func's vmap(grad) of the one-sample loss."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.randint(0, 3, (6,))
    found = reference.contributions(model, reference.per_sample(nn.functional.cross_entropy), (x, y))
    params = {n: p.detach() for n, p in model.named_parameters()}

    def one_loss(p, xi, yi):
        return nn.functional.cross_entropy(functional_call(model, p, (xi[None],)), yi[None])

    per_sample = vmap(grad(one_loss), in_dims=(None, 0, 0))(params, x, y)
    for layer in ("0", "2"):
        names = [n for n in params if n.startswith(f"{layer}.")]
        g = torch.cat([per_sample[n].flatten(1) for n in names], 1) / len(x)
        w = torch.cat([params[n].flatten() for n in names])
        torch.testing.assert_close(
            torch.tensor(found["layers"][layer]["norm2"], dtype=torch.float64),
            (g * g).sum(1),
            rtol=1e-12,
            atol=0,
        )
        torch.testing.assert_close(
            torch.tensor(found["layers"][layer]["weight_dot"], dtype=torch.float64),
            g @ w,
            rtol=1e-12,
            atol=1e-15,
        )
    assert (
        found["residual"] < 1e-12
        and abs(found["copy_loss"] - nn.functional.cross_entropy(model(x), y).item()) < 1e-12
    )


def test_reference_leaves_the_model_and_rng_alone() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2))
    before = copy.deepcopy(model.state_dict())
    state = torch.random.get_rng_state()
    reference.contributions(
        model, reference.per_sample(nn.functional.cross_entropy), (torch.ones(3, 4), torch.zeros(3).long())
    )
    assert torch.equal(state, torch.random.get_rng_state())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_layer_names_are_the_users() -> None:
    assert reference.layer_of("0.parametrizations.weight.original") == "0"
    assert reference.layer_of("blocks.1.fc.parametrizations.weight.original1") == "blocks.1.fc"
    assert reference.layer_of("blocks.1.fc.bias") == "blocks.1.fc"
    assert reference.layer_of("weight") == ""
