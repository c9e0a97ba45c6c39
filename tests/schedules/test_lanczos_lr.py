"""Lanczos with Hessian-vector products against explicit Hessians, and the LanczosLR rules."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from thrifty.schedules import LanczosLR, hessian_eigenvalues, lanczos


def _mlp_problem():
    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    for p in model.parameters():
        p.data = torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.7
    x = torch.randn(16, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(3, (16,), generator=gen)
    return model, x, y


def test_lanczos_matches_the_explicit_hessian_of_a_tiny_mlp():
    model, x, y = _mlp_problem()
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach() for _, p in model.named_parameters()]
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]

    def flat_loss(theta):
        parts = dict(zip(names, (c.view(s) for c, s in zip(theta.split(sizes), shapes, strict=True)), strict=True))
        return torch.nn.functional.cross_entropy(functional_call(model, parts, (x,)), y)

    theta = torch.cat([p.reshape(-1) for p in params])
    exact = torch.linalg.eigvalsh(torch.autograd.functional.hessian(flat_loss, theta))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    ritz = hessian_eigenvalues(loss, list(model.parameters()), iters=theta.numel(), generator=torch.Generator())
    scale = exact.abs().max()
    assert abs(ritz[-1] - exact[-1]) <= 1e-4 * abs(exact[-1])
    assert abs(ritz[0] - exact[0]) <= 1e-4 * scale
    few = hessian_eigenvalues(loss, list(model.parameters()), iters=30, generator=torch.Generator().manual_seed(1))
    assert abs(few[-1] - exact[-1]) <= 1e-4 * abs(exact[-1])  # the top of the spectrum converges first


def test_lanczos_is_exact_on_a_quadratic_after_n_iterations():
    gen = torch.Generator().manual_seed(3)
    n = 40
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    eig = torch.logspace(-3, 2, n, dtype=torch.float64)
    a = q @ torch.diag(eig) @ q.T
    ritz = lanczos(lambda v: a @ v, torch.randn(n, generator=gen, dtype=torch.float64), iters=n)
    assert torch.allclose(ritz, eig, rtol=1e-9, atol=1e-11)
    # the same through double backprop on f(x) = x^T A x / 2
    x = torch.randn(n, dtype=torch.float64, requires_grad=True)
    ritz = hessian_eigenvalues(0.5 * x @ a @ x, [x], iters=n, generator=gen)
    assert torch.allclose(ritz, eig, rtol=1e-9, atol=1e-11)


def test_lanczos_stops_on_an_invariant_subspace():
    a = torch.diag(torch.tensor([1.0, 1.0, 1.0, 5.0], dtype=torch.float64))
    ritz = lanczos(lambda v: a @ v, torch.ones(4, dtype=torch.float64), iters=4)
    assert torch.allclose(ritz, torch.tensor([1.0, 5.0], dtype=torch.float64))


def test_linear_loss_has_zero_hessian():
    x = torch.randn(6, requires_grad=True)
    assert torch.allclose(hessian_eigenvalues(x.sum() * 3.0, [x], iters=4), torch.zeros(1))


def test_lanczos_lr_sets_polyak_heavy_ball_rates_on_a_quadratic():
    eig = torch.tensor([1.0, 4.0, 9.0, 16.0], dtype=torch.float64)
    x = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    opt = torch.optim.SGD([x], lr=1.0, momentum=0.0)
    sched = LanczosLR(opt, every=10, iters=4, scale=1.0)
    for _ in range(30):
        sched.step(lambda: 0.5 * (eig * x * x).sum())
        opt.zero_grad()
        (0.5 * (eig * x * x).sum()).backward()
        opt.step()
    assert [h["step"] for h in sched.history] == [0, 10, 20]
    assert opt.param_groups[0]["lr"] == pytest.approx(4 / (4 + 1) ** 2)
    assert opt.param_groups[0]["momentum"] == pytest.approx(((4 - 1) / (4 + 1)) ** 2)
    assert x.abs().max() < 1e-4  # the optimal heavy ball contracts at about sqrt(momentum) = 0.6 per step
    assert isinstance(sched, torch.optim.lr_scheduler.LRScheduler)
    assert sched.get_last_lr() == [opt.param_groups[0]["lr"]] and sched.last_epoch == 30
    with pytest.raises(TypeError, match="closure"):
        sched.step()


def test_lanczos_lr_rules_and_bad_input():
    p = torch.nn.Parameter(torch.zeros(2))
    sched = LanczosLR(torch.optim.SGD([p], lr=0.1), momentum=False, max_condition=10.0)
    assert sched.rates(10.0, -3.0) == pytest.approx((0.25 * 2 / 11, 0.0))
    with pytest.raises(ValueError, match="momentum"):
        LanczosLR(torch.optim.Adam([p]))
    with pytest.raises(ValueError, match="every"):
        LanczosLR(torch.optim.SGD([p], lr=0.1), every=0)
    with pytest.raises(ValueError, match="scale"):
        LanczosLR(torch.optim.SGD([p], lr=0.1), scale=0.0)
    with pytest.raises(ValueError, match="max_condition"):
        LanczosLR(torch.optim.SGD([p], lr=0.1), max_condition=1.0)
    state = sched.state_dict()
    sched.load_state_dict(state)
    assert sched.steps == 0 and math.isfinite(sched.rates(1.0, 1.0)[0])
