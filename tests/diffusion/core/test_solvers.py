import math

import pytest
import torch

from thrifty.diffusion.core.data import eight_gaussians
from thrifty.diffusion.core.denoiser import GaussianMixtureDenoiser
from thrifty.diffusion.core.metrics import CountingDenoiser, sliced_wasserstein
from thrifty.diffusion.core.schedules import EDMSchedule, RectifiedFlowSchedule, VPSchedule
from thrifty.diffusion.core.solvers import (
    ClassifierFreeGuidance,
    DPMSolverPP2M,
    Euler,
    Heun,
    Stochastic,
    check_grid,
    edm_grid,
    logsnr_grid,
    sample,
    uniform_grid,
)


def test_grid_validation_names_the_problem():
    with pytest.raises(ValueError, match="strictly decreasing"):
        check_grid(torch.tensor([1.0, 0.5, 0.5, 0.0]))
    with pytest.raises(ValueError, match="strictly decreasing"):
        check_grid(torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match="zero steps"):
        check_grid(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="positive integer"):
        uniform_grid(0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_grid(torch.tensor([1.5, 0.0]))
    assert torch.allclose(uniform_grid(4), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))


@pytest.mark.parametrize("sch", [RectifiedFlowSchedule(), VPSchedule(), EDMSchedule()])
def test_edm_and_logsnr_grids(sch):
    for grid in (edm_grid(6, sch), logsnr_grid(6, sch)):
        check_grid(grid)
        assert len(grid) == 7 and grid[0] == 1 and grid[-1] == 0
    # EDM's rho-grid: the interior levels sigma/alpha are evenly spaced in level^(1/7)
    g = edm_grid(6, sch)[1:-1].double()
    levels = torch.exp(-sch.log_snr(g) / 2) ** (1 / 7)
    assert torch.allclose(levels[1:] - levels[:-1], (levels[1:] - levels[:-1]).mean().expand(4), rtol=1e-3)


def _gaussian_error(solver: str, steps: int) -> float:
    # N(0, s0^2) data: the probability-flow ODE scales x by std(t) = sqrt(a^2 s0^2 + s^2),
    # so x_lo = x_hi std(lo) / std(hi)
    sch, s0, hi, lo = RectifiedFlowSchedule(), 0.7, 0.9, 0.1
    den = GaussianMixtureDenoiser(torch.zeros(1, 2), s0, schedule=sch)
    std = lambda t: math.sqrt((1 - t) ** 2 * s0**2 + t * t)  # noqa: E731
    x = torch.randn(512, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * std(hi)
    out = sample(den.double(), x, torch.linspace(hi, lo, steps + 1, dtype=torch.float64), solver)
    return float((out - x * std(lo) / std(hi)).abs().max())


def test_second_order_solvers_have_higher_observed_order_than_euler():
    slopes = {}
    for solver in ("euler", "heun", "dpmpp_2m"):
        e1, e2 = _gaussian_error(solver, 16), _gaussian_error(solver, 64)
        slopes[solver] = math.log(e1 / e2) / math.log(4)
    assert 0.8 < slopes["euler"] < 1.2
    assert slopes["heun"] > 1.7 and slopes["dpmpp_2m"] > 1.7


@pytest.mark.parametrize("solver", ["euler", "heun", "dpmpp_2m", "stochastic"])
def test_all_solvers_converge_to_the_mixture(solver):
    mix = eight_gaussians()
    den = mix.denoiser()
    g = torch.Generator().manual_seed(1)
    ref = mix.sample(2000, g)
    noise = torch.randn(2000, 2, generator=g)
    floor = sliced_wasserstein(mix.sample(2000, g), ref, 64, g)  # two independent samples of the data
    swd = [sliced_wasserstein(sample(den, noise, uniform_grid(k), solver, generator=g), ref, 64, g) for k in (2, 32)]
    assert swd[0] > 2 * floor and swd[1] < 1.3 * floor


def test_nfe_counts_and_dpm_state_reset():
    den = CountingDenoiser(eight_gaussians().denoiser())
    x = torch.randn(8, 2)
    sample(den, x, uniform_grid(5), "heun")
    assert den.nfe == 9  # 2K - 1: the final step to t = 0 is Euler
    solver = DPMSolverPP2M()
    a = sample(den, x, uniform_grid(5), solver)
    assert torch.equal(a, sample(den, x, uniform_grid(5), solver))


def test_stochastic_eta_zero_is_ddim_and_solvers_are_differentiable_in_the_grid():
    den = eight_gaussians().denoiser(VPSchedule("cosine"))
    x = torch.randn(16, 2)
    assert torch.allclose(sample(den, x, uniform_grid(6), Stochastic(eta=0.0)), sample(den, x, uniform_grid(6)))
    grid = uniform_grid(4).requires_grad_(True)
    sample(den, x, grid, "dpmpp_2m").pow(2).sum().backward()
    assert grid.grad is not None and torch.isfinite(grid.grad).all() and grid.grad[1:-1].abs().sum() > 0


@torch.no_grad()
def test_euler_and_stochastic_accept_one_time_per_sample():
    den = eight_gaussians().denoiser(VPSchedule("cosine"))
    x, t, t_next = torch.randn(5, 2), torch.linspace(0.9, 0.5, 5), torch.linspace(0.6, 0.1, 5)
    for solver in (Euler(), Stochastic(eta=0.7)):
        batched = solver.step(den, x, t, t_next, generator=torch.Generator().manual_seed(0))
        gen = torch.Generator().manual_seed(0)
        z = torch.randn(x.shape, generator=gen)  # the batched step draws one noise tensor for the batch
        rows = []
        for i in range(5):
            pred = den.predict(x[i : i + 1], t[i])
            a, s = den.schedule.alpha(t[i]), den.schedule.sigma(t[i])
            a_n, s_n = den.schedule.alpha(t_next[i]), den.schedule.sigma(t_next[i])
            eta = getattr(solver, "eta", 0.0)
            c = eta * s_n * (1 - ((a * s_n) / (a_n * s)) ** 2).clamp_min(0).sqrt()
            rows.append(a_n * pred.x0 + (s_n**2 - c**2).sqrt() * pred.eps + c * z[i : i + 1])
        assert torch.allclose(batched, torch.cat(rows), atol=1e-5), type(solver).__name__


@torch.no_grad()
def test_heun_accepts_one_time_per_sample():
    den = eight_gaussians().denoiser()
    x, t, t_next = torch.randn(4, 2), torch.tensor([0.9, 0.7, 0.5, 0.3]), torch.tensor([0.6, 0.4, 0.2, 0.1])
    batched = Heun().step(den, x, t, t_next)
    rows = [Heun().step(den, x[i : i + 1], t[i], t_next[i]) for i in range(4)]
    assert torch.allclose(batched, torch.cat(rows), atol=1e-6)


def test_classifier_free_guidance_combines_two_calls():
    means = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])

    class Cond(GaussianMixtureDenoiser):
        def forward(self, x, t, cond=None):
            if cond is None:
                return super().forward(x, t)
            return torch.full_like(x, float(cond))

    den = Cond(means, 0.3)
    cfg = ClassifierFreeGuidance(den, 3.0, uncond=None)
    x = torch.randn(4, 2)
    base = den(x, 0.5)
    assert torch.allclose(cfg(x, 0.5, 1.0), base + 3.0 * (1.0 - base))
    assert torch.allclose(cfg.predict(x, 0.5, 1.0).x0, base + 3.0 * (1.0 - base))
    assert torch.equal(cfg(x, 0.5), base)
