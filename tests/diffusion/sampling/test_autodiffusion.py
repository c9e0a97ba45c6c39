import pytest
import torch
from torch import nn

from thrifty.diffusion.core.denoiser import Denoiser, ModuleDenoiser
from thrifty.diffusion.core.schedules import RectifiedFlowSchedule
from thrifty.diffusion.core.solvers import sample, uniform_grid
from thrifty.diffusion.sampling.autodiffusion import AutoDiffusionSearch, SkipPlanDenoiser, search_skips


class _TimeProbe(Denoiser):
    """Predicts x0 = 0 and records the times it is called at, so a fitness can score the grid itself."""

    def __init__(self):
        super().__init__(RectifiedFlowSchedule(), "x0")
        self.times = []

    def forward(self, x, t, cond=None):
        self.times.append(round(float(t), 6))
        return torch.zeros_like(x)


def test_search_finds_a_known_optimum_and_never_loses_to_uniform():
    probe = _TimeProbe()
    target = [1.0, 0.82, 0.42, 0.12]

    def fitness(samples):
        called, probe.times[:] = probe.times[-4:], []
        return sum(abs(a - b) for a, b in zip(called, target, strict=True))

    search = AutoDiffusionSearch(
        probe, 4, fitness, resolution=50, population=20, mutation_num=10, crossover_num=6, epochs=8, seed=0
    )
    result = search.search(torch.zeros(2, 1))
    # within two levels (0.02 each) of the optimum, far better than the uniform grid's 0.37
    assert result.fitness <= 0.04 + 1e-9 and result.grid[0] == 1 and result.grid[-1] == 0
    assert result.history == sorted(result.history, reverse=True)  # top-k keeps the best so far
    assert result.fitness <= search.evaluate(search.uniform_candidate())
    # the uniform grid rounded to the 50-level search space (Python rounds 37.5 to 38 and 12.5 to 12)
    assert search.grid_of(search.uniform_candidate()).tolist() == pytest.approx([1.0, 0.76, 0.5, 0.24, 0.0])
    assert all(len(set(c)) == 3 and all(1 <= k <= 49 for k in c) for c in search.cache)
    again = AutoDiffusionSearch(
        probe, 4, fitness, resolution=50, population=20, mutation_num=10, crossover_num=6, epochs=8, seed=0
    )
    assert again.search(torch.zeros(2, 1)).candidate == result.candidate
    with pytest.raises(ValueError, match="positive integer"):
        AutoDiffusionSearch(probe, 0, fitness)


def test_skip_plan_replaces_blocks_per_step_and_search_respects_the_budget():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 8), nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 2))
    den = ModuleDenoiser(_Drop(net), "velocity")
    blocks = [net[1], net[2]]
    x = torch.randn(5, 2)
    plan = [(), (0,), (0, 1)]
    wrapped = SkipPlanDenoiser(den, blocks, plan)
    out = sample(wrapped, x, uniform_grid(3))
    manual, grid = x, uniform_grid(3)
    for i, skip in enumerate(plan):
        layers = [net[0]] + [b for j, b in enumerate(blocks) if j not in skip] + [net[3]]
        v = nn.Sequential(*layers)(manual)
        manual = manual + (grid[i + 1] - grid[i]) * v
    assert torch.allclose(out, manual, atol=1e-6)
    assert all(len(b._forward_hooks) == 0 for b in blocks)
    with pytest.raises(ValueError, match="outside"):
        SkipPlanDenoiser(den, blocks, [(2,)])
    ref = sample(den, x, grid)

    def fitness(samples):
        return float((samples - ref).abs().mean())

    best, score = search_skips(den, blocks, grid, x, fitness, max_skip_fraction=0.34, population=8, epochs=2)
    assert best == [(), (), ()] and score == 0.0
    # a fitness that rewards skipping: the plan skips as much as the budget allows (2 of 3 steps x 2 blocks x 0.34)
    best, score = search_skips(
        den, blocks, grid, x, lambda out: -fitness(out), max_skip_fraction=0.34, population=8, epochs=2
    )
    assert 0 < sum(len(p) for p in best) <= 2 and score < 0


class _Drop(nn.Module):
    """Wrap a net so it ignores the time input (velocity = net(x))."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, t):
        return self.net(x)
