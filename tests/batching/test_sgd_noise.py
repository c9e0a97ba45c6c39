"""SGD-noise study tools (arXiv 2301.13703): the alpha trick, the lazy limit, the stopping rule, T_c and its fit."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, jvp

from thrifty.batching.sgd_noise import (
    AlphaScaledModel,
    all_fitted,
    critical_temperature,
    fit_power_law,
    scaled_hinge_loss,
    train_until_fitted,
)


def _net(seed: int, d: int = 6, h: int = 32) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, 1))


def _data(n: int = 24, d: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen)
    return x, torch.where(x[:, 0] + 0.5 * x[:, 1] > 0, 1.0, -1.0)


@pytest.mark.parametrize("alpha", [1e-3, 1.0, 1e3])
def test_output_is_zero_at_init_for_any_alpha(alpha):
    model = AlphaScaledModel(_net(0), alpha)
    x, _ = _data()
    assert torch.equal(model(x), torch.zeros(len(x), 1))
    assert model.weight_variation() == 0.0
    assert not any(p.requires_grad for p in model.initial.parameters())


def _lazy_gap(alpha: float, steps: int = 60, lr: float = 0.5) -> float:
    """Full-batch GD on the scaled hinge loss, for the model and for its linearisation around w_0 (same data, same
    lr): the relative distance of their outputs on fresh points after training."""
    x, y = _data()
    x_test, _ = _data(50, seed=1)
    model = AlphaScaledModel(_net(0), alpha)
    w0 = {k: v.detach().clone() for k, v in model.model.named_parameters()}
    delta = {k: torch.zeros_like(v, requires_grad=True) for k, v in w0.items()}

    def linear(inputs):
        return alpha * jvp(lambda w: functional_call(model.initial, w, (inputs,)), (w0,), (delta,))[1]

    opt = torch.optim.SGD(list(model.model.parameters()) + list(delta.values()), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        (scaled_hinge_loss(model(x), y, alpha) + scaled_hinge_loss(linear(x), y, alpha)).backward()
        opt.step()
    with torch.no_grad():
        out, lin = model(x_test), linear(x_test)
    return float((out - lin).norm() / lin.norm())


def test_lazy_regime_training_approaches_the_linearised_model_as_alpha_grows():
    gaps = [_lazy_gap(alpha) for alpha in (1.0, 10.0, 100.0)]
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[2] < 0.05


def test_stopping_rule_needs_every_margin_at_least_one():
    y = torch.tensor([1.0, -1.0, 1.0])
    assert all_fitted(torch.tensor([1.0, -1.0, 2.5]), y)
    assert not all_fitted(torch.tensor([1.0, -1.0, 0.999]), y)
    assert not all_fitted(torch.tensor([[3.0], [1.0], [4.0]]), y)  # second point on the wrong side
    assert scaled_hinge_loss(torch.tensor([1.0, -1.0, 2.5]), y, 2.0) == 0.0
    assert scaled_hinge_loss(torch.tensor([0.0, -1.0, 1.0]), y, 2.0) == pytest.approx(1.0 / 3 / 4)


def test_training_stops_exactly_when_fitted_or_at_the_cap():
    x, y = _data()
    model = AlphaScaledModel(_net(0), 1.0)
    result = train_until_fitted(
        model,
        x,
        y,
        temperature=0.05,
        batch_size=4,
        max_steps=5000,
        check_every=1,
        generator=torch.Generator().manual_seed(0),
    )
    assert result.fitted and 0 < result.steps < 5000
    with torch.no_grad():
        assert all_fitted(model(x), y)
    assert result.time == pytest.approx(0.05 * 4 * result.steps)
    capped = AlphaScaledModel(_net(0), 1.0)
    short = train_until_fitted(
        capped,
        x,
        y,
        temperature=0.05,
        batch_size=4,
        max_steps=result.steps - 1,
        check_every=1,
        generator=torch.Generator().manual_seed(0),
    )
    assert not short.fitted and short.steps == result.steps - 1
    with torch.no_grad():
        assert not all_fitted(capped(x), y)


def test_critical_temperature_and_power_law_fit():
    temps = [0.01, 0.1, 1.0]
    assert critical_temperature(temps, [1.0, 2.0, 8.0], 4.0) == pytest.approx(10**-0.5)
    assert math.isnan(critical_temperature(temps, [1.0, 1.1, 1.2], 4.0))
    assert math.isnan(critical_temperature(temps, [5.0, 6.0, 7.0], 4.0))
    k, c, r2 = fit_power_law([10, 100, 1000], [3 * 10**-0.5, 3 * 100**-0.5, 3 * 1000**-0.5])
    assert k == pytest.approx(-0.5) and c == pytest.approx(3.0) and r2 == pytest.approx(1.0)
