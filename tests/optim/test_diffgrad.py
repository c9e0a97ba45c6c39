"""DiffGrad: hand-computed steps, the Adam reduction, official-code trajectories, and the optimizer API."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from thrifty.optim._core import state_bytes
from thrifty.optim.diffgrad import DiffGrad, friction

F64 = torch.float64


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@pytest.fixture(scope="module")
def official(official_mlp) -> dict:
    return official_mlp.load("diffgrad_official.json")


@pytest.fixture
def optimizer(official_mlp, official: dict):
    """``optimizer(params, **extra)``: DiffGrad over the fixture's two param groups."""
    return lambda params, **extra: official_mlp.build_optimizer(DiffGrad, official, params, **extra)


@pytest.mark.parametrize("foreach", [False, True])
def test_three_hand_computed_steps(foreach: bool) -> None:
    p = torch.tensor([1.0, -2.0, 0.5], dtype=F64, requires_grad=True)
    opt = DiffGrad([p], lr=0.1, betas=(0.5, 0.75), eps=0.0, foreach=foreach)
    p0 = [1.0, -2.0, 0.5]

    # Step 1: g_prev = 0, so friction = sigmoid(|g|); m = g/2, v = g^2/4 and the bias-corrected
    # ratio is sign(g), so the step is lr * friction * sign(g).
    p.grad = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
    opt.step()
    p1 = [p0[0] - 0.1 * _sig(0.5), p0[1] + 0.1 * _sig(1.0), p0[2] - 0.1 * _sig(2.0)]
    torch.testing.assert_close(p.detach(), torch.tensor(p1, dtype=F64), rtol=1e-14, atol=1e-15)

    # Step 2, same gradient: friction = 0.5, m = 0.75 g, v = 0.4375 g^2, bc1 = 0.75, bc2 = 0.4375.
    opt.step()
    p2 = [p1[0] - 0.05, p1[1] + 0.05, p1[2] - 0.05]
    torch.testing.assert_close(p.detach(), torch.tensor(p2, dtype=F64), rtol=1e-14, atol=1e-15)

    # Step 3, g = (0.5, 1, 0): |g_prev - g| = (0, 2, 2); m = (0.4375, 0.125, 0.75);
    # v = (0.14453125, 0.578125, 1.3125); bc1 = 0.875, bc2 = 0.578125.
    p.grad = torch.tensor([0.5, 1.0, 0.0], dtype=F64)
    opt.step()
    step_size = 0.1 * math.sqrt(0.578125) / 0.875
    p3 = [
        p2[0] - step_size * 0.5 * 0.4375 / math.sqrt(0.14453125),
        p2[1] - step_size * _sig(2.0) * 0.125 / math.sqrt(0.578125),
        p2[2] - step_size * _sig(2.0) * 0.75 / math.sqrt(1.3125),
    ]
    torch.testing.assert_close(p.detach(), torch.tensor(p3, dtype=F64), rtol=1e-14, atol=1e-15)
    assert opt.state[p]["step"] == 3


@pytest.mark.parametrize("foreach", [False, True])
def test_constant_gradient_is_adam_at_half_lr_after_step_one(foreach: bool) -> None:
    g = torch.tensor([0.3, -1.2, 2.0, -0.05, 0.7, 5.0], dtype=F64)
    p0 = torch.linspace(-1.0, 1.0, 6, dtype=F64)
    p_dg = p0.clone().requires_grad_(True)
    p_adam = p0.clone().requires_grad_(True)
    # eps=0: diffGrad adds eps to the uncorrected sqrt(v), Adam to the corrected one.
    dg = DiffGrad([p_dg], lr=1e-2, eps=0.0, foreach=foreach)
    adam = torch.optim.Adam([p_adam], lr=5e-3, eps=0.0)
    deltas_dg, deltas_adam = [], []
    for _ in range(10):
        for p, opt, deltas in ((p_dg, dg, deltas_dg), (p_adam, adam, deltas_adam)):
            before = p.detach().clone()
            p.grad = g.clone()
            opt.step()
            deltas.append(p.detach() - before)
    # Step 1 compares g with g_prev = 0 (official behaviour): friction sigmoid(|g|), not 0.5.
    torch.testing.assert_close(deltas_dg[0], -1e-2 * torch.sigmoid(g.abs()) * g.sign(), rtol=1e-12, atol=0)
    for t in range(1, 10):
        torch.testing.assert_close(deltas_dg[t], deltas_adam[t], rtol=1e-10, atol=0)


@pytest.mark.parametrize("foreach", [False, True])
def test_matches_official_trajectory(official: dict, foreach: bool, official_mlp, optimizer) -> None:
    params, loss_fn = official_mlp.problem(official)
    trajectory = official_mlp.train(optimizer(params, foreach=foreach), params, loss_fn, official["steps"])
    for mine, theirs in zip(trajectory, official["trajectory"], strict=True):
        for name, p in zip(official_mlp.NAMES, mine, strict=True):
            torch.testing.assert_close(p, torch.tensor(theirs[name], dtype=F64), rtol=1e-9, atol=1e-12)


def test_foreach_equals_reference(official: dict, official_mlp, optimizer) -> None:
    runs = []
    for foreach in (False, True):
        params, loss_fn = official_mlp.problem(official)
        opt = optimizer(params, foreach=foreach, maximize=False)
        runs.append(official_mlp.train(opt, params, loss_fn, 20))
    for a, b in zip(*runs, strict=True):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=0)


def test_friction_bounds() -> None:
    zeros = torch.zeros(5, dtype=F64)
    assert torch.equal(friction(zeros, zeros), torch.full((5,), 0.5, dtype=F64))
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(1000, generator=gen, dtype=F64) * torch.logspace(-6, 2, 1000, dtype=F64)
    b = torch.randn(1000, generator=gen, dtype=F64) * torch.logspace(2, -6, 1000, dtype=F64)
    xi = friction(a, b)
    assert bool(((xi >= 0.5) & (xi <= 1.0)).all())
    assert torch.equal(xi, friction(b, a))
    order = (a - b).abs().argsort()
    assert bool((xi[order].diff() >= 0).all())
    torch.testing.assert_close(xi, torch.sigmoid((a - b).abs()), rtol=1e-15, atol=0)


@pytest.mark.parametrize("foreach", [False, True])
def test_previous_grad_is_a_copy_including_weight_decay(foreach: bool) -> None:
    p = torch.tensor([1.0, -2.0, 0.5], dtype=F64, requires_grad=True)
    opt = DiffGrad([p], lr=0.1, weight_decay=0.5, foreach=foreach)
    g = torch.tensor([0.2, 0.4, -0.6], dtype=F64)
    p.grad = g.clone()
    opt.step()
    # Coupled L2 enters before the friction, so g_prev = g + wd * p0 (as in the official code) ...
    expected_prev = g + 0.5 * torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    assert torch.equal(opt.state[p]["previous_grad"], expected_prev)
    # ... but p.grad itself is left as it was (the official code adds wd * p to it in place).
    assert torch.equal(p.grad, g)
    p.grad.zero_()
    assert torch.equal(opt.state[p]["previous_grad"], expected_prev)


@pytest.mark.parametrize("foreach", [False, True])
def test_resume_from_state_dict_is_bit_identical(official: dict, foreach: bool, official_mlp) -> None:
    official_mlp.assert_resume_is_bit_identical(DiffGrad, official, foreach=foreach)


def test_loads_a_state_dict_without_the_extra_options(official: dict, official_mlp, optimizer) -> None:
    """The official class saves no ``foreach``/``maximize``; such a state dict still loads and runs."""
    params, loss_fn = official_mlp.problem(official)
    opt = optimizer(params)
    official_mlp.train(opt, params, loss_fn, 3)
    state_dict = copy.deepcopy(opt.state_dict())
    for group in state_dict["param_groups"]:
        del group["foreach"], group["maximize"]
    fresh = optimizer(params)
    fresh.load_state_dict(state_dict)
    assert all(g["foreach"] is None and g["maximize"] is False for g in fresh.param_groups)
    assert fresh.state[params[0]]["step"] == 3
    official_mlp.train(fresh, params, loss_fn, 1)


@pytest.mark.parametrize("foreach", [False, True])
def test_maximize_equals_minimizing_the_negated_loss(official: dict, foreach: bool, official_mlp, optimizer) -> None:
    runs = []
    for maximize in (False, True):
        params, loss_fn = official_mlp.problem(official)
        opt = optimizer(params, foreach=foreach, maximize=maximize)
        runs.append(official_mlp.train(opt, params, official_mlp.negated(loss_fn) if maximize else loss_fn, 10))
    for a, b in zip(*runs, strict=True):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-14, atol=0)


def test_state_is_three_tensors_per_parameter() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    opt = DiffGrad(model.parameters())
    model(torch.randn(4, 5)).sum().backward()
    opt.step()
    assert state_bytes(opt) == sum(3 * p.numel() * p.element_size() for p in model.parameters())


def test_sparse_gradients_raise() -> None:
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = DiffGrad(emb.parameters())
    emb(torch.tensor([1, 4])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -1e-3}, r"lr must be in \[0, inf\]"),
        ({"eps": -1e-8}, r"eps must be in \[0, inf\]"),
        ({"weight_decay": -0.1}, r"weight_decay must be in \[0, inf\]"),
        ({"betas": (1.0, 0.999)}, r"betas\[0\] must be in \[0, 1\)"),
        ({"betas": (0.9, -0.1)}, r"betas\[1\] must be in \[0, 1\)"),
        ({"betas": (0.9,)}, r"betas must be a tuple of 2 numbers in \[0, 1\)"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DiffGrad([torch.zeros(2, requires_grad=True)], **kwargs)


def test_defaults_match_the_official_signature() -> None:
    opt = DiffGrad([torch.zeros(2, requires_grad=True)])
    assert {k: opt.defaults[k] for k in ("lr", "betas", "eps", "weight_decay")} == {
        "lr": 1e-3,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 0,
    }


def test_registered_in_factory() -> None:
    from thrifty.optim.factory import get_optimizer_class

    assert get_optimizer_class("diffgrad") is DiffGrad
