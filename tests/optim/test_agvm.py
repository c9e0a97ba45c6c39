"""AGVM: the variance proxy and its ratio, the multiplier schedule, exact LR restoration, Adam halves, resume."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from thrifty.optim.agvm import AGVM, module_param_groups


class TwoModule(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(6, 8), nn.Tanh())
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def _setup(seed: int = 0, **agvm_options):
    torch.manual_seed(seed)
    model = TwoModule()
    opt = torch.optim.SGD(module_param_groups(model, ["backbone", "head"], lr=0.05), lr=0.05)
    return model, AGVM(opt, **({"start_iter": 0, "update_interval": 1} | agvm_options))


def _batch(seed: int, n: int = 32):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=gen)
    return x, torch.randn(n, 2, generator=gen)


def _train(model: nn.Module, agvm: AGVM, steps: int, start: int = 0, head_weight: float = 1.0) -> None:
    for t in range(start, start + steps):
        x, y = _batch(t)

        def loss(xs, ys):
            out = model(xs)
            return ((out - ys) ** 2).mean() * head_weight

        agvm.zero_grad()
        agvm.backward(loss(x[:16], y[:16]), loss(x[16:], y[16:]))
        agvm.step()


def test_identical_halves_give_ratio_one_and_multipliers_one() -> None:
    model, agvm = _setup()
    for t in range(5):
        x, y = _batch(t)
        agvm.zero_grad()
        agvm.backward(((model(x) - y) ** 2).mean(), ((model(x) - y) ** 2).mean())
        agvm.step()
        assert all(abs(d) < 1e-12 for d in agvm.variances)
        assert agvm.ratios == pytest.approx([1.0, 1.0], rel=1e-9)
    assert agvm.multipliers == pytest.approx([1.0, 1.0], rel=1e-9)


def test_ratio_is_the_clipped_square_root_and_the_ema_follows_it() -> None:
    model, agvm = _setup(update_interval=1)
    lo, hi = math.sqrt(0.5), math.sqrt(10.0)
    mu = [1.0, 1.0]
    for t in range(40):
        x, y = _batch(t)
        # Half B has a much noisier head loss, so D_head varies widely against D_backbone.
        scale = 10.0 ** ((t % 5) - 2)
        agvm.zero_grad()
        agvm.backward(((model(x[:16]) - y[:16]) ** 2).mean(), ((model(x[16:]) - scale * y[16:]) ** 2).mean())
        d0, d1 = agvm.variances
        expected = math.sqrt(min(max((d0 + 1e-6) / (d1 + 1e-6), 0.5), 10.0))
        assert agvm.ratios[1] == pytest.approx(expected, rel=1e-12)
        assert agvm.ratios[0] == 1.0
        assert lo - 1e-12 <= agvm.ratios[1] <= hi + 1e-12
        mu = [0.97 * m + 0.03 * r for m, r in zip(mu, agvm.ratios, strict=True)]
        assert agvm.multipliers == pytest.approx(mu, rel=1e-12)
        agvm.step()


def test_variance_proxy_is_one_minus_cosine_of_the_halves() -> None:
    model, agvm = _setup()
    x, y = _batch(0)
    la, lb = ((model(x[:16]) - y[:16]) ** 2).mean(), ((model(x[16:]) - y[16:]) ** 2).mean()
    ga = torch.autograd.grad(la, list(model.head.parameters()), retain_graph=True)
    gb = torch.autograd.grad(lb, list(model.head.parameters()), retain_graph=True)
    full = torch.autograd.grad((la + lb) / 2, list(model.parameters()), retain_graph=True)
    agvm.backward(la, lb)
    flat_a = torch.cat([g.reshape(-1) for g in ga]).double()
    flat_b = torch.cat([g.reshape(-1) for g in gb]).double()
    assert agvm.variances[1] == pytest.approx(1 - float(torch.cosine_similarity(flat_a, flat_b, dim=0)), rel=1e-12)
    for p, g in zip(model.parameters(), full, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-6, atol=1e-7)


def test_learning_rates_are_modulated_for_the_step_and_restored_exactly() -> None:
    model, agvm = _setup()
    lrs = [0.1 / 3, 0.7 / 9]
    for group, lr in zip(agvm.param_groups, lrs, strict=True):
        group["lr"] = lr
    for t in range(1000):
        x, y = _batch(t % 50)
        agvm.zero_grad()
        agvm.backward(((model(x[:16]) - y[:16]) ** 2).mean(), ((model(x[16:]) - 3 * y[16:]) ** 2).mean() * 5)
        before = [p.detach().clone() for p in model.head.parameters()]
        grads = [p.grad.clone() for p in model.head.parameters()]
        agvm.step()
        assert [g["lr"] for g in agvm.param_groups] == lrs
        if t % 100 == 0:
            for b, g, p in zip(before, grads, model.head.parameters(), strict=True):
                torch.testing.assert_close(p.detach(), b - lrs[1] * agvm.multipliers[1] * g, rtol=1e-6, atol=1e-7)
    assert agvm.multipliers[1] != 1.0
    assert agvm.iteration == 1000


def test_one_group_keeps_the_multiplier_at_exactly_one() -> None:
    torch.manual_seed(0)
    model = TwoModule()
    agvm = AGVM(torch.optim.SGD(model.parameters(), lr=0.05), start_iter=0, update_interval=1)
    _train(model, agvm, 50)
    assert agvm.multipliers == [1.0]


def test_updates_follow_start_and_interval_and_lr_is_untouched_before_start() -> None:
    model, agvm = _setup(start_iter=6, update_interval=4, stop_iter=14)
    updates = []
    for t in range(20):
        updates.append(agvm.updates_now())
        _train(model, agvm, 1, start=t)
    assert [t for t, u in enumerate(updates) if u] == [8, 12]
    assert not math.isnan(agvm.variances[1])


def test_adam_halves_are_normalised_by_the_second_moment() -> None:
    torch.manual_seed(0)
    model = TwoModule()
    opt = torch.optim.Adam(module_param_groups(model, ["backbone", "head"]), lr=1e-3, betas=(0.9, 0.99))
    agvm = AGVM(opt, start_iter=0, update_interval=1)
    assert agvm.adam
    _train(model, agvm, 3)
    x, y = _batch(99)
    la, lb = ((model(x[:16]) - y[:16]) ** 2).mean(), ((model(x[16:]) - y[16:]) ** 2).mean()
    head = list(model.head.parameters())
    ga = torch.autograd.grad(la, head, retain_graph=True)
    gb = torch.autograd.grad(lb, head, retain_graph=True)

    def normalised(p, g):
        v = opt.state[p]["exp_avg_sq"]
        return (g / ((0.99 * v + 0.01 * g**2).sqrt() + 1e-8)).reshape(-1).double()

    a = torch.cat([normalised(p, g) for p, g in zip(head, ga, strict=True)])
    b = torch.cat([normalised(p, g) for p, g in zip(head, gb, strict=True)])
    agvm.zero_grad()
    agvm.backward(la, lb)
    assert agvm.variances[1] == pytest.approx(1 - float(torch.cosine_similarity(a, b, dim=0)), rel=1e-6)
    assert not AGVM(torch.optim.SGD(model.parameters(), lr=0.1)).adam


def test_resume_from_state_dict_is_bit_identical() -> None:
    model, agvm = _setup(update_interval=2)
    _train(model, agvm, 12, head_weight=10.0)
    full = [p.detach().clone() for p in model.parameters()]

    model, agvm = _setup(update_interval=2)
    _train(model, agvm, 5, head_weight=10.0)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "agvm": agvm.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    model, agvm = _setup(update_interval=2)
    model.load_state_dict(saved["model"])
    agvm.load_state_dict(saved["agvm"])  # the inner optimizer's state and AGVM's own
    _train(model, agvm, 7, start=5, head_weight=10.0)
    for a, b in zip(full, model.parameters(), strict=True):
        assert torch.equal(a, b.detach())


def test_module_param_groups_checks_coverage() -> None:
    model = TwoModule()
    groups = module_param_groups(model, ["backbone", "head"], lr=0.1)
    assert [g["name"] for g in groups] == ["backbone", "head"]
    with pytest.raises(ValueError, match="parameters in no group: head.weight, head.bias"):
        module_param_groups(model, ["backbone"])
    with pytest.raises(ValueError, match="shares parameters"):
        module_param_groups(model, ["backbone", "backbone.0", "head"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"update_interval": 0}, r"update_interval must be an integer in \[1, inf\)"),
        ({"start_iter": -1}, r"start_iter must be an integer in \[0, inf\)"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AGVM(torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1), **kwargs)


def test_load_state_dict_checks_the_number_of_groups() -> None:
    _, agvm = _setup()
    state = agvm.state_dict()
    state["agvm"]["multipliers"] = [1.0]
    with pytest.raises(ValueError, match="1 multipliers for 2 param groups"):
        agvm.load_state_dict(state)


def test_is_an_optimizer_that_lr_schedulers_drive() -> None:
    model, agvm = _setup(update_interval=2)
    assert isinstance(agvm, torch.optim.Optimizer)
    sched = torch.optim.lr_scheduler.StepLR(agvm, step_size=1, gamma=0.5)
    before = [g["lr"] for g in agvm.optimizer.param_groups]
    _train(model, agvm, 1, head_weight=10.0)
    sched.step()
    assert [g["lr"] for g in agvm.optimizer.param_groups] == [lr / 2 for lr in before]
