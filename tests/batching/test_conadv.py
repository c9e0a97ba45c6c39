"""ConAdv: staleness 0 is sequential adversarial training, the epsilon bound, stale weights, no gradient via x_adv."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from thrifty.batching.conadv import ConAdv, adversarial_step, fgsm

EPS = 0.1


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    batches = [(torch.rand(8, 6), torch.randint(3, (8,))) for _ in range(5)]
    return model, batches


def _sequential_reference(model: nn.Module, batches, lr: float) -> list[torch.Tensor]:
    """Adversarial training written out by hand: input gradient at the current weights, FGSM, then SGD."""
    params = list(model.parameters())
    optimizer = torch.optim.SGD(params, lr=lr)
    for x, y in batches:
        x_in = x.clone().requires_grad_(True)
        (gx,) = torch.autograd.grad(F.cross_entropy(model(x_in), y), x_in)
        x_adv = (x + EPS * gx.sign()).clamp(0.0, 1.0)
        loss = F.cross_entropy(model(x), y) + F.cross_entropy(model(x_adv), y)
        for p, g in zip(params, torch.autograd.grad(loss, params), strict=True):
            p.grad = g
        optimizer.step()
    return [p.detach() for p in params]


def test_staleness_zero_equals_sequential_adversarial_training_exactly():
    model, batches = _setup()
    reference = _sequential_reference(copy.deepcopy(model), batches, 0.1)
    conadv_model, step_model = copy.deepcopy(model), copy.deepcopy(model)
    conadv = ConAdv(conadv_model, torch.optim.SGD(conadv_model.parameters(), lr=0.1), EPS, staleness=0)
    step_opt = torch.optim.SGD(step_model.parameters(), lr=0.1)
    for x, y in batches:
        conadv.step(x, y)
        adversarial_step(step_model, step_opt, x, y, EPS)
    for r, a, b in zip(reference, conadv_model.parameters(), step_model.parameters(), strict=True):
        assert torch.equal(r, a) and torch.equal(r, b)


@pytest.mark.parametrize("staleness", [1, 2])
def test_perturbation_uses_the_weights_of_staleness_steps_before(staleness):
    model, batches = _setup(1)
    conadv = ConAdv(model, torch.optim.SGD(model.parameters(), lr=0.5), EPS, staleness=staleness)
    history = [copy.deepcopy(model)]
    for x, y in batches:
        stale = history[max(0, len(history) - 1 - staleness)]
        assert torch.equal(conadv.perturb(x, y), fgsm(stale, x, y, EPS))
        conadv.step(x, y)
        history.append(copy.deepcopy(model))
    assert not torch.equal(history[0][0].weight, history[-1][0].weight)


def test_staleness_one_parameter_gradient_is_clean_plus_adversarial_at_current_weights():
    model, batches = _setup(2)
    conadv = ConAdv(model, torch.optim.SGD(model.parameters(), lr=0.5), EPS)
    conadv.step(*batches[0])
    x, y = batches[1]
    x_adv = conadv.perturb(x, y)
    assert not x_adv.requires_grad and x_adv.grad_fn is None  # no parameter gradient flows through x_adv
    before = copy.deepcopy(model)
    expected = torch.autograd.grad(
        F.cross_entropy(before(x), y) + F.cross_entropy(before(x_adv), y), list(before.parameters())
    )
    conadv.update(x, x_adv, y)
    for p, g in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, g)


def test_perturbation_respects_eps_and_the_data_range():
    model, batches = _setup(3)
    x, y = batches[0]
    x_adv = fgsm(model, x, y, EPS)
    assert (x_adv - x).abs().max() <= EPS + 1e-7
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert ((x_adv - x).abs() > 0).any()
    free = fgsm(model, x, y, EPS, data_range=None)
    torch.testing.assert_close((free - x).abs(), torch.full_like(x, EPS))  # no zero input gradients here
    assert not any(p.grad is not None for p in model.parameters())  # FGSM leaves parameter grads alone
    with pytest.raises(ValueError, match="eps must be non-negative"):
        fgsm(model, x, y, -0.1)
    with pytest.raises(ValueError, match="staleness must be non-negative"):
        ConAdv(model, torch.optim.SGD(model.parameters(), lr=0.1), EPS, staleness=-1)
