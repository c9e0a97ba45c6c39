import itertools
import math

import pytest
import torch

from thrifty.diffusion.core.data import eight_gaussians
from thrifty.diffusion.core.denoiser import ModuleDenoiser
from thrifty.diffusion.core.solvers import sample, uniform_grid
from thrifty.diffusion.core.teachers import TimeMLP, train_flow_matching
from thrifty.diffusion.sampling.boss import BellmanStepSizes, bellman_cost_matrix, bellman_path, straighten


def _brute_force(cost: torch.Tensor, steps: int) -> float:
    n = cost.shape[0]
    best = math.inf
    for mid in itertools.combinations(range(1, n - 1), steps - 1):
        path = (0, *mid, n - 1)
        best = min(best, sum(float(cost[a, b]) for a, b in zip(path, path[1:], strict=False)))
    return best


def test_bellman_path_is_the_cheapest_path_with_k_edges():
    g = torch.Generator().manual_seed(0)
    n = 9
    cost = torch.rand(n, n, generator=g, dtype=torch.float64)
    cost = torch.where(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), cost, torch.full_like(cost, math.inf))
    for steps in range(1, n):
        path = bellman_path(cost, steps)
        assert path[0] == 0 and path[-1] == n - 1 and len(path) == steps + 1
        assert all(a < b for a, b in zip(path, path[1:], strict=False))
        assert sum(float(cost[a, b]) for a, b in zip(path, path[1:], strict=False)) == pytest.approx(
            _brute_force(cost, steps)
        )
    with pytest.raises(ValueError, match="cannot take"):
        bellman_path(cost, n)
    with pytest.raises(ValueError, match="positive integer"):
        bellman_path(cost, 0)


def test_cost_matrix_is_the_one_step_euler_error_against_the_reference():
    den = eight_gaussians().denoiser()
    noise = torch.randn(32, 2, generator=torch.Generator().manual_seed(1))
    grid = uniform_grid(6)
    cost, traj = bellman_cost_matrix(den, noise, grid, batch_size=10)
    ref = sample(den, noise, grid, return_trajectory=True)[1]
    assert all(torch.allclose(a, b) for a, b in zip(traj, ref, strict=True))
    assert torch.allclose(torch.diagonal(cost, 1), torch.zeros(6, dtype=torch.float64), atol=1e-10)
    # c[1][4] by hand: one Euler (velocity) step from x_1 at t_1 straight to t_4
    v = den.predict(traj[1], grid[1]).velocity
    expected = (traj[1] + (grid[4] - grid[1]) * v - traj[4]).pow(2).sum(1).mean()
    assert float(cost[1, 4]) == pytest.approx(float(expected), rel=1e-5)
    assert math.isinf(float(cost[4, 1])) and math.isinf(float(cost[2, 2]))


def test_bellman_grid_is_a_subgrid_and_needs_fit():
    den = eight_gaussians().denoiser()
    boss = BellmanStepSizes(den, k_max=20)
    with pytest.raises(RuntimeError, match="fit"):
        boss.grid(3)
    boss.fit(torch.randn(64, 2, generator=torch.Generator().manual_seed(0)))
    grid = boss.grid(3)
    assert grid[0] == 1 and grid[-1] == 0 and len(grid) == 4
    assert all(bool(torch.isclose(boss.reference, t).any()) for t in grid)
    with pytest.raises(ValueError, match="'uniform' or 'edm'"):
        BellmanStepSizes(den, 10, "cosine")
    assert len(BellmanStepSizes(den, 10, "edm").reference) == 11


def test_straightening_pulls_the_few_step_sampler_onto_the_reference():
    torch.manual_seed(0)
    net = TimeMLP(2, 32, 2, time_dim=8)
    mix = eight_gaussians()
    train_flow_matching(net, lambda n, g: mix.sample(n, g), steps=150, batch_size=128, lr=3e-3)
    den = ModuleDenoiser(net, "velocity")
    boss = BellmanStepSizes(den, k_max=10).fit(torch.randn(64, 2))
    grid = boss.grid(2)
    noise = torch.randn(256, 2)
    with torch.no_grad():
        target = sample(den, noise, boss.reference)  # the frozen model's reference endpoints

    def gap() -> float:
        with torch.no_grad():
            return float((sample(den, noise, grid) - target).pow(2).mean())

    before = gap()
    losses = straighten(den, grid, lambda n, g: torch.randn(n, 2, generator=g), boss.reference, 100, 128, 3e-3, 512)
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])
    assert gap() < 0.5 * before
    with pytest.raises(ValueError, match="sub-grid"):
        straighten(den, torch.tensor([1.0, 0.55, 0.0]), lambda n, g: torch.randn(n, 2), boss.reference, 1)
