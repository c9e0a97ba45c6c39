"""BSVRB (arXiv 2305.18730): the closed-form workload, the MSVR weight, exactness and the v2 inner iteration."""

from __future__ import annotations

import pytest
import torch

from thrifty.bench.workloads.bilevel import make_multiblock_ridge
from thrifty.optim.bsvrb import BSVRB, hypergradient_terms, msvr_gamma, msvr_update


def _problem(m: int = 4, seed: int = 0):
    return make_multiblock_ridge(num_blocks=m, dim=5, n_train=20, n_val=20, seed=seed)


def _opt(prob, x, ys, **kwargs) -> BSVRB:
    m = prob.num_blocks
    return BSVRB(x, ys, [prob.f(i) for i in range(m)], [prob.g(i) for i in range(m)], **kwargs)


def _exact_u(prob, x) -> torch.Tensor:
    y = prob.lower_solutions(x)
    residual = (prob.a_val @ y.unsqueeze(-1)).squeeze(-1) - prob.b_val
    grad_y_f = (prob.a_val.mT @ residual.unsqueeze(-1)).squeeze(-1) / prob.a_val.shape[1]
    return torch.linalg.solve(prob.lower_hessians(x), grad_y_f)


def test_closed_form_hypergradient_matches_autograd_through_the_solve():
    prob = _problem()
    for seed in range(3):
        x = torch.randn(prob.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        xa = x.clone().requires_grad_(True)
        (auto,) = torch.autograd.grad(prob.objective(xa), xa)
        torch.testing.assert_close(prob.hypergradient(x), auto, rtol=1e-10, atol=1e-12)


def test_terms_at_the_exact_lower_solution_give_the_hypergradient():
    prob = _problem()
    x = 0.3 * torch.ones(prob.dim, dtype=torch.float64)
    y, u = prob.lower_solutions(x), _exact_u(prob, x)
    parts = [hypergradient_terms(prob.f(i), prob.g(i), x, y[i], u[i], None, None) for i in range(prob.num_blocks)]
    for gy, res, _ in parts:
        assert gy.abs().max() < 1e-12 and res.abs().max() < 1e-12
    torch.testing.assert_close(torch.stack([p[2] for p in parts]).mean(0), prob.hypergradient(x))


def test_all_blocks_and_beta_one_estimate_the_exact_hypergradient():
    prob = _problem()
    x = torch.zeros(prob.dim, dtype=torch.float64)
    ys = [torch.zeros(prob.dim, dtype=torch.float64) for _ in range(prob.num_blocks)]
    opt = _opt(prob, x, ys, lr=0.5, lr_y=0.1, beta=1.0, beta_x=1.0, blocks_per_step=prob.num_blocks)
    assert opt.gamma == 0.0
    for _ in range(3):  # the first step initialises the trackers; later steps go through the MSVR/STORM updates
        for y, y_star, u, u_star in zip(ys, prob.lower_solutions(x), opt.u, _exact_u(prob, x), strict=True):
            y.copy_(y_star)
            u.copy_(u_star)
        expected = prob.hypergradient(x)
        torch.testing.assert_close(opt.step(lambda i: (None, None)), expected, rtol=1e-10, atol=1e-12)


def test_gamma_formula_and_storm_when_every_block_is_sampled():
    assert msvr_gamma(50, 5, 0.1) == pytest.approx(45 / (5 * 0.9) + 0.9)
    for beta in (0.05, 0.3, 0.9, 1.0):
        assert msvr_gamma(7, 7, beta) == pytest.approx(1 - beta)
        h, new, old = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
        storm = (1 - beta) * (h - old) + new
        torch.testing.assert_close(msvr_update(h, new, old, beta, msvr_gamma(7, 7, beta)), storm)
    with pytest.raises(ValueError, match="infinite"):
        msvr_gamma(5, 2, 1.0)
    with pytest.raises(ValueError, match="sampled blocks"):
        msvr_gamma(5, 6, 0.5)


def test_v2_inner_iteration_converges_to_the_hessian_inverse_vector():
    prob = _problem()
    x = 0.2 * torch.ones(prob.dim, dtype=torch.float64)
    ys = [y.clone() for y in prob.lower_solutions(x)]
    gen = torch.Generator().manual_seed(0)
    opt = _opt(prob, x.clone(), ys, lr=1e-12, lr_y=0.2, beta=0.5, blocks_per_step=2, generator=gen)
    for _ in range(400):
        opt.step(lambda i: (None, None))
    torch.testing.assert_close(torch.stack(opt.u), _exact_u(prob, x), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("variance_reduction", [True, False])
def test_docstring_example_converges(variance_reduction):
    x = torch.zeros(3)
    ys = [torch.zeros(3) for _ in range(2)]
    targets = [torch.ones(3), 3 * torch.ones(3)]
    f = [lambda x, y, batch, t=t: 0.5 * (y - t).square().sum() for t in targets]
    g = [lambda x, y, batch: 0.5 * y.square().sum() - y @ x for _ in range(2)]
    opt = BSVRB(
        x, ys, f, g, lr=0.1, lr_y=0.5, beta=0.5, beta_x=0.5, blocks_per_step=2, variance_reduction=variance_reduction
    )
    for _ in range(200):
        opt.step(lambda i: (None, None))
    torch.testing.assert_close(x, torch.full((3,), 2.0))
    torch.testing.assert_close(torch.stack(ys), torch.full((2, 3), 2.0))


def test_bad_input():
    prob = _problem()
    x = torch.zeros(prob.dim, dtype=torch.float64)
    ys = [torch.zeros(prob.dim, dtype=torch.float64) for _ in range(prob.num_blocks)]
    with pytest.raises(ValueError, match="one f and one g"):
        BSVRB(x, ys, [prob.f(0)], [prob.g(0)], lr=0.1, lr_y=0.1)
    with pytest.raises(ValueError, match="lr_y"):
        _opt(prob, x, ys, lr=0.1, lr_y=0.0)
    opt = _opt(prob, x, ys, lr=0.1, lr_y=0.1, blocks_per_step=2)
    with pytest.raises(ValueError, match="distinct blocks"):
        opt.step(lambda i: (None, None), blocks=[1, 1])
