"""BOSS: Bellman Optimal Step-size Straightening of flow-matching models (Nguyen et al., arXiv 2312.16414).

Stage 1 (step sizes, training-free): integrate ``num_samples`` reference trajectories with Euler on a ``K_max``-step
reference grid ``t_0 = 1 > ... > t_Kmax = 0`` (uniform or EDM), then for every pair ``i < j`` the local cost

    c[i][j] = E || x_i + (t_j - t_i) v(x_i, t_i) - x_j ||^2

(one Euler step from grid point i straight to j against the reference trajectory). The K-step grid is the cheapest path
0 -> K_max with exactly K edges, by the Bellman recursion ``dp[i][1] = c[i][K_max]``, ``dp[i][k] = min_{i<j<K_max}
c[i][j] + dp[j][k-1]`` and backtracking (``find_minimum_cost_path`` with ``"dp"`` in the official
``ImageGeneration/sampling.py``; defaults K_max = 100, 100 samples, squared-L2 "l2_pixel" cost summed over pixels).
Here the Euler step is the solver's DDIM step, which equals the Euler velocity step for rectified flow and works for
any schedule.

Stage 2 (straightening): fine-tune the model on the chosen intervals only, so that one Euler step lands on the
reference trajectory: ``L = E || x_a + (t_b - t_a) v_theta(x_a, t_a) - x_b ||^2 / (t_b - t_a)^2`` over pairs
``(x_a, x_b)`` of consecutive chosen grid points on the frozen teacher's reference trajectories (official
``finetune.py``: data generated once from the K_max-step Euler trajectories; full or LoRA fine-tuning).

``BellmanStepSizes(denoiser, k_max, reference).fit(noise).grid(K)`` gives the grid; ``straighten(denoiser, ...)``
fine-tunes in place.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from thrifty.diffusion.core.denoiser import Denoiser
from thrifty.diffusion.core.schedules import _expand
from thrifty.diffusion.core.solvers import check_grid, edm_grid, sample, uniform_grid

__all__ = ["BellmanStepSizes", "bellman_cost_matrix", "bellman_path", "reference_grid", "straighten"]


def reference_grid(denoiser: Denoiser, k_max: int = 100, reference: str = "uniform") -> Tensor:
    """The ``k_max``-step reference grid: ``"uniform"`` in t or ``"edm"`` (EDM's rho = 7 grid)."""
    if reference == "uniform":
        return uniform_grid(k_max)
    if reference == "edm":
        return edm_grid(k_max, denoiser.schedule)
    raise ValueError(f"reference grid must be 'uniform' or 'edm', got {reference!r}")


@torch.no_grad()
def bellman_cost_matrix(
    denoiser: Denoiser, noise: Tensor, grid: Tensor, cond: Any = None, batch_size: int = 256
) -> tuple[Tensor, list[Tensor]]:
    """``(c, trajectory)``: the ``(K_max + 1)^2`` cost matrix (``c[i][j]`` for ``j > i``, ``inf`` elsewhere; mean over
    samples of the per-sample squared error summed over features) and the Euler reference trajectory on ``grid``."""
    grid = check_grid(grid)
    n = grid.numel()
    cost = torch.zeros(n, n, dtype=torch.float64)
    trajectory: list[list[Tensor]] = [[] for _ in range(n)]
    sch = denoiser.schedule
    for start in range(0, len(noise), batch_size):
        x = noise[start : start + batch_size]
        cond_b = cond[start : start + batch_size] if isinstance(cond, Tensor) else cond
        xs, preds = [x], []
        for i in range(n - 1):
            pred = denoiser.predict(xs[-1], grid[i], cond_b)
            preds.append(pred)
            xs.append(sch.alpha(grid[i + 1]) * pred.x0 + sch.sigma(grid[i + 1]) * pred.eps)
        for i in range(n - 1):
            a = sch.alpha(grid[i + 1 :])
            s = sch.sigma(grid[i + 1 :])
            shape = (-1,) + (1,) * xs[0].dim()
            est = a.reshape(shape) * preds[i].x0[None] + s.reshape(shape) * preds[i].eps[None]
            target = torch.stack(xs[i + 1 :])
            err = (est - target).double().pow(2).flatten(2).sum(-1).sum(-1)  # (n - 1 - i,)
            cost[i, i + 1 :] += err
        for i, xi in enumerate(xs):
            trajectory[i].append(xi)
    cost /= len(noise)
    cost.masked_fill_(~torch.triu(torch.ones(n, n, dtype=torch.bool), 1), math.inf)
    return cost, [torch.cat(parts) for parts in trajectory]


def bellman_path(cost: Tensor, steps: int) -> list[int]:
    """Indices ``0 = i_0 < ... < i_K = n - 1`` of the cheapest path with exactly ``steps`` edges (Bellman DP)."""
    n = cost.shape[0]
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"number of steps must be a positive integer, got {steps!r}")
    if steps > n - 1:
        raise ValueError(f"cannot take {steps} steps on a reference grid of {n - 1} steps")
    c = cost.double()
    dp = torch.full((steps + 1, n), math.inf, dtype=torch.float64)
    nxt = torch.full((steps + 1, n), -1, dtype=torch.long)
    dp[1] = c[:, n - 1]
    nxt[1] = n - 1
    for k in range(2, steps + 1):
        # candidate j in (i, n-1): c[i][j] + dp[k-1][j]
        total = c[:, : n - 1] + dp[k - 1, : n - 1][None, :]
        best, arg = total.min(1)
        dp[k], nxt[k] = best, arg
    path, cur = [0], 0
    for k in range(steps, 0, -1):
        cur = int(nxt[k, cur])
        path.append(cur)
    return path


class BellmanStepSizes:
    """Stage 1 of BOSS: Bellman-optimal K-step grids chosen from a ``k_max``-step reference grid.

    ``fit(noise, cond=None)`` integrates the reference trajectories from ``noise`` (state at t = 1) and builds the cost
    matrix; ``grid(steps)`` returns the optimal ``steps``-step time grid (a tensor from 1 to 0); ``path(steps)`` its
    indices in ``reference``; ``trajectory`` keeps the reference states (for ``straighten``).
    """

    def __init__(self, denoiser: Denoiser, k_max: int = 100, reference: str = "uniform") -> None:
        self.denoiser = denoiser
        self.k_max = k_max
        self.reference = reference_grid(denoiser, k_max, reference)
        self.cost: Tensor | None = None
        self.trajectory: list[Tensor] | None = None

    def fit(self, noise: Tensor, cond: Any = None, batch_size: int = 256) -> BellmanStepSizes:
        self.cost, self.trajectory = bellman_cost_matrix(self.denoiser, noise, self.reference, cond, batch_size)
        return self

    def path(self, steps: int) -> list[int]:
        if self.cost is None:
            raise RuntimeError("call fit(noise) before asking for a grid")
        return bellman_path(self.cost, steps)

    def grid(self, steps: int) -> Tensor:
        return self.reference[self.path(steps)].clone()


@torch.enable_grad()
def straighten(
    denoiser: Denoiser,
    steps_grid: Tensor,
    noise_sampler: Callable[[int, torch.Generator], Tensor],
    reference: Tensor,
    iterations: int = 500,
    batch_size: int = 256,
    lr: float = 1e-4,
    pairs: int = 2048,
    seed: int = 0,
    cond: Any = None,
    progress: Callable[[int], None] | None = None,
) -> list[float]:
    """Stage 2 of BOSS: fine-tune ``denoiser`` (in place, all its parameters) on the intervals of ``steps_grid``.

    ``steps_grid`` must be a sub-grid of ``reference`` (as returned by ``BellmanStepSizes.grid``). Training pairs are
    the frozen model's Euler states on ``reference`` at consecutive points of ``steps_grid``, for ``pairs`` noise draws
    (generated once, as the official ``generate_data_from_z0``). Loss per pair: ``|DDIM(x_a, t_a -> t_b) - x_b|^2 /
    (t_a - t_b)^2`` (for rectified flow ``|v(x_a, t_a) - (x_b - x_a) / (t_b - t_a)|^2``), Adam. Returns the losses.
    """
    steps_grid, reference = check_grid(steps_grid), check_grid(reference)
    index = []
    for t in steps_grid:
        hits = torch.nonzero(torch.isclose(reference, t), as_tuple=False)
        if len(hits) == 0:
            raise ValueError(f"steps_grid must be a sub-grid of the reference grid; {float(t):g} is not in it")
        index.append(int(hits[0, 0]))
    gen = torch.Generator().manual_seed(seed)
    noise = noise_sampler(pairs, gen)
    with torch.no_grad():
        _, traj = sample(denoiser, noise, reference, "euler", cond, return_trajectory=True)
    xa = torch.cat([traj[index[k]] for k in range(len(index) - 1)])
    xb = torch.cat([traj[index[k + 1]] for k in range(len(index) - 1)])
    ta = torch.cat([reference[index[k]].expand(pairs) for k in range(len(index) - 1)])
    tb = torch.cat([reference[index[k + 1]].expand(pairs) for k in range(len(index) - 1)])
    sch = denoiser.schedule
    params = [p for p in denoiser.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the denoiser has no trainable parameters to straighten")
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    denoiser.train()
    for _ in range(iterations):
        idx = torch.randint(len(xa), (batch_size,), generator=gen)
        x, t, t_next, target = xa[idx], ta[idx], tb[idx], xb[idx]
        pred = denoiser.predict(x, t, cond)
        step = _expand(sch.alpha(t_next), x) * pred.x0 + _expand(sch.sigma(t_next), x) * pred.eps
        dt = _expand(t - t_next, x)
        loss = ((step - target) / dt).pow(2).flatten(1).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(1)
    denoiser.eval()
    return losses
