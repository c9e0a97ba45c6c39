"""Solvers over an explicit time grid (``t`` strictly decreasing in [0, 1], t = 1 is noise), diffusers-scheduler style.

A grid is a 1-D tensor ``t_0 > t_1 > ... > t_K`` (K steps; ``check_grid`` raises ``ValueError`` for zero steps, values
outside [0, 1] or a grid that is not strictly decreasing). Grids are ordinary tensors, so a sampler may optimise them
(every solver is differentiable in the grid). Builders: ``uniform_grid(K)``, ``edm_grid(K, schedule)`` (Karras rho-grid
in ``sigma / alpha``), ``logsnr_grid(K, schedule)``.

A ``Solver`` has ``order``, ``nfe(steps)``, ``reset()`` and ``step(denoiser, x, t, t_next, cond=None, generator=None)``
(``denoiser`` is a ``thrifty.diffusion.core.denoiser.Denoiser``, or anything with ``predict(x, t, cond) ->
Prediction``, e.g. ``ClassifierFreeGuidance``). With ``x_t = a x0 + s eps``, ``lambda = log(a / s)``, ``h = lambda_next
- lambda``:

- ``Euler`` (DDIM, eta = 0): ``x' = a' x0 + s' eps``; equal to Euler on the velocity for rectified flow.
- ``Heun`` (EDM Algorithm 1 in t): Euler predictor on ``dx/dt = a_t' x0 + s_t' eps``, trapezoid corrector; the last
  step to t = 0 is Euler (so K steps cost 2K - 1 evaluations when the grid ends at 0).
- ``DPMSolverPP2M`` (Lu et al. 2022, multistep data prediction): ``x' = (s'/s) x - a' (e^{-h} - 1) D`` with
  ``D = (1 + 1/(2r)) x0 - 1/(2r) x0_prev``, ``r = h_prev / h``; first order on the first step and on a final step to
  ``sigma = 0``.
- ``Stochastic(eta, churn)``: EDM churn (raise ``sigma / alpha`` by ``(1 + churn)`` with fresh noise), then the
  DDIM-eta step ``x' = a' x0 + sqrt(s'^2 - c^2) eps + c z`` with ``c = eta s' sqrt(1 - e^{-2h})``; eta = 1 is DDPM's
  ancestral step, eta = churn = 0 is DDIM.

``sample(denoiser, noise, grid, solver="euler", cond=None, generator=None, return_trajectory=False)`` runs a grid.
``ClassifierFreeGuidance(denoiser, scale, uncond)`` combines two denoiser calls: ``pred_u + w (pred_c - pred_u)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from thrifty.diffusion.core.denoiser import Denoiser, DenoiserWrapper, Prediction
from thrifty.diffusion.core.schedules import NoiseSchedule, _expand, as_time

__all__ = [
    "SOLVERS",
    "ClassifierFreeGuidance",
    "DPMSolverPP2M",
    "Euler",
    "Heun",
    "Solver",
    "Stochastic",
    "check_grid",
    "edm_grid",
    "get_solver",
    "logsnr_grid",
    "sample",
    "uniform_grid",
]


def check_grid(grid: Tensor) -> Tensor:
    """``grid`` as a floating 1-D tensor if it is a valid time grid, else a ``ValueError`` naming the problem."""
    grid = torch.as_tensor(grid)
    grid = grid if grid.is_floating_point() else grid.float()
    if grid.dim() != 1:
        raise ValueError(f"time grid must be 1-D, got shape {tuple(grid.shape)}")
    if grid.numel() < 2:
        raise ValueError(f"time grid needs at least 2 points (1 step), got {grid.numel()}: zero steps requested")
    if not bool(torch.isfinite(grid).all()) or bool((grid < 0).any()) or bool((grid > 1).any()):
        raise ValueError(f"time grid values must lie in [0, 1], got {grid.tolist()}")
    if not bool((grid[1:] < grid[:-1]).all()):
        raise ValueError(f"time grid must be strictly decreasing (t = 1 is noise), got {grid.tolist()}")
    return grid


def _check_steps(steps: int) -> int:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"number of steps must be a positive integer, got {steps!r}")
    return steps


def uniform_grid(steps: int, t_max: float = 1.0, t_min: float = 0.0) -> Tensor:
    """``steps + 1`` times evenly spaced from ``t_max`` down to ``t_min``."""
    return torch.linspace(t_max, t_min, _check_steps(steps) + 1)


def edm_grid(
    steps: int,
    schedule: NoiseSchedule,
    rho: float = 7.0,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    t_max: float = 1.0,
    t_min: float = 0.0,
) -> Tensor:
    """EDM's rho-grid (Karras et al. 2022) in the VE noise level ``sigma / alpha``, mapped back to t; ends at ``t_min``.

    ``sigma_i = (s_max^(1/rho) + i / (K - 1) (s_min^(1/rho) - s_max^(1/rho)))^rho`` for ``i < K``, then ``t_min``, as
    in EDM and the BOSS code (``get_edm_disc``). ``[s_min, s_max]`` is EDM's default range ``[0.002, 80]`` clipped to
    the levels the schedule reaches strictly inside ``(t_min, t_max)``; the first point is ``t_max`` itself.
    """
    _check_steps(steps)

    def level(t: float) -> float:
        return math.exp(-float(schedule.log_snr(torch.tensor(t, dtype=torch.float64))) / 2)

    inset = (t_max - t_min) / 1000
    s_max = min(sigma_max, level(t_max - inset)) if level(t_max) > sigma_max else level(t_max)
    s_min = max(sigma_min, level(t_min + inset))
    i = torch.arange(steps, dtype=torch.float64)
    frac = i / (steps - 1) if steps > 1 else torch.zeros(1, dtype=torch.float64)
    sig = (s_max ** (1 / rho) + frac * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    t = schedule.t_from_log_snr(-2 * torch.log(sig)).clamp(t_min, t_max)
    t[0] = t_max
    return torch.cat([t, torch.tensor([t_min], dtype=torch.float64)]).float()


def logsnr_grid(steps: int, schedule: NoiseSchedule, t_max: float = 1.0, t_min: float = 0.0) -> Tensor:
    """Times evenly spaced in log-SNR (DPM-Solver's default) between finite end levels, ending at ``t_min``."""
    _check_steps(steps)
    eps = (t_max - t_min) / 1000
    lo = schedule.log_snr(torch.tensor(t_max - eps, dtype=torch.float64))
    hi = schedule.log_snr(torch.tensor(t_min + eps, dtype=torch.float64))
    lam = torch.linspace(float(lo), float(hi), steps + 1, dtype=torch.float64)
    t = schedule.t_from_log_snr(lam)
    t[0], t[-1] = t_max, t_min
    return t.float()


def _ratio_exp_neg_h(a: Tensor, s: Tensor, a_next: Tensor, s_next: Tensor) -> Tensor:
    """``e^{-h} = (a s') / (a' s)``, finite when a = 0 (t = 1 of a flow) or s' = 0 (the final step)."""
    return (a * s_next) / (a_next * s).clamp_min(1e-20)


class Solver:
    """One step ``x_t -> x_{t_next}`` of a sampler; multistep solvers keep state between steps (``reset`` clears it)."""

    order: int = 1
    stochastic: bool = False

    def reset(self) -> None:
        """Forget the history of a multistep solver (called by ``sample`` before each trajectory)."""

    def nfe(self, steps: int, ends_at_zero: bool = True) -> int:
        """Denoiser evaluations for ``steps`` steps."""
        return steps

    def step(
        self,
        denoiser: Any,
        x: Tensor,
        t: Tensor,
        t_next: Tensor,
        cond: Any = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        raise NotImplementedError


def _ddim(pred: Prediction, schedule: NoiseSchedule, t_next: Tensor) -> Tensor:
    x0 = pred.x0
    return _expand(schedule.alpha(t_next), x0) * x0 + _expand(schedule.sigma(t_next), x0) * pred.eps


class Euler(Solver):
    """DDIM / Euler: ``x' = alpha(t') x0 + sigma(t') eps`` from the prediction at t (``t``, ``t'`` may be ``(B,)``)."""

    def step(self, denoiser, x, t, t_next, cond=None, generator=None):
        return _ddim(denoiser.predict(x, t, cond), denoiser.schedule, t_next)


class Heun(Solver):
    """Heun's second-order method on ``dx/dt``; Euler on a final step to t = 0 (as EDM's sampler).

    Accepts one time per sample (``(B,)`` tensors); the Euler-only final step applies when every ``t'`` is 0.
    """

    order = 2

    def nfe(self, steps: int, ends_at_zero: bool = True) -> int:
        return 2 * steps - 1 if ends_at_zero else 2 * steps

    def step(self, denoiser, x, t, t_next, cond=None, generator=None):
        d = denoiser.predict(x, t, cond).velocity
        dt = _expand(as_time(t_next, x) - as_time(t, x), x)
        x_euler = x + dt * d
        if bool((as_time(t_next).detach() <= 0).all()):
            return x_euler
        d_next = denoiser.predict(x_euler, t_next, cond).velocity
        return x + dt * (d + d_next) / 2


class DPMSolverPP2M(Solver):
    """DPM-Solver++(2M): second-order multistep in the data prediction (Lu et al. 2022, arXiv 2211.01095)."""

    order = 2

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._x0_prev: Tensor | None = None
        self._h_prev: Tensor | None = None

    def step(self, denoiser, x, t, t_next, cond=None, generator=None):
        sch = denoiser.schedule
        pred = denoiser.predict(x, t, cond)
        a, s, a_n, s_n = sch.alpha(t), sch.sigma(t), sch.alpha(t_next), sch.sigma(t_next)
        h = sch.log_snr(t_next) / 2 - sch.log_snr(t) / 2
        if float(s_n.detach()) <= 0:  # final step to the data: first order (lower_order_final)
            self.reset()
            return a_n * pred.x0
        d = pred.x0
        if self._x0_prev is not None:
            r = self._h_prev / h
            d = (1 + 1 / (2 * r)) * pred.x0 - 1 / (2 * r) * self._x0_prev
        self._x0_prev, self._h_prev = pred.x0, h
        e = _ratio_exp_neg_h(a, s, a_n, s_n)
        return (s_n / s.clamp_min(1e-20)) * x + a_n * (1 - e) * d


class Stochastic(Solver):
    """Stochastic step: EDM churn ``gamma = churn`` then DDIM-eta (eta = 1: DDPM ancestral; SDE-like sampling).

    Like ``Euler``, it accepts one time per sample (``(B,)`` tensors) when ``churn = 0``.
    """

    stochastic = True

    def __init__(self, eta: float = 1.0, churn: float = 0.0) -> None:
        if eta < 0 or churn < 0:
            raise ValueError(f"eta and churn must be >= 0, got {eta}, {churn}")
        self.eta, self.churn = eta, churn

    def step(self, denoiser, x, t, t_next, cond=None, generator=None):
        sch = denoiser.schedule
        if self.churn > 0 and float(t.detach()) < 1:
            lam = sch.log_snr(t)
            t_hat = sch.t_from_log_snr(lam - 2 * math.log1p(self.churn)).clamp(max=1.0)
            a, s, a_hat, s_hat = sch.alpha(t), sch.sigma(t), sch.alpha(t_hat), sch.sigma(t_hat)
            # x / a has VE noise level s / a; add noise up to s_hat / a_hat and rescale by a_hat
            extra = (s_hat / a_hat.clamp_min(1e-20)) ** 2 - (s / a.clamp_min(1e-20)) ** 2
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            x = a_hat * (x / a.clamp_min(1e-20) + extra.clamp_min(0).sqrt() * z)
            t = t_hat
        pred = denoiser.predict(x, t, cond)
        a, s, a_n, s_n = (_expand(v, x) for v in (sch.alpha(t), sch.sigma(t), sch.alpha(t_next), sch.sigma(t_next)))
        e = _ratio_exp_neg_h(a, s, a_n, s_n)
        c = self.eta * s_n * (1 - e * e).clamp_min(0).sqrt()
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return a_n * pred.x0 + (s_n * s_n - c * c).clamp_min(0).sqrt() * pred.eps + c * z


SOLVERS = {"euler": Euler, "ddim": Euler, "heun": Heun, "dpmpp_2m": DPMSolverPP2M, "stochastic": Stochastic}


def get_solver(solver: str | Solver) -> Solver:
    """A fresh solver by name (``euler``/``ddim``, ``heun``, ``dpmpp_2m``, ``stochastic``), or ``solver`` itself."""
    if isinstance(solver, Solver):
        return solver
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; expected one of {', '.join(SOLVERS)}")
    return SOLVERS[solver]()


def sample(
    denoiser: Any,
    noise: Tensor,
    grid: Tensor,
    solver: str | Solver = "euler",
    cond: Any = None,
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
) -> Tensor | tuple[Tensor, list[Tensor]]:
    """Integrate from ``noise`` at ``grid[0]`` to ``grid[-1]``; optionally return every iterate (``K + 1`` tensors).

    ``noise`` is the state at ``grid[0]`` (for t = 1 of a flow or VP schedule, standard normal noise; for EDM, noise
    scaled by ``sigma(1)``).
    """
    grid = check_grid(grid).to(noise.device)
    solver = get_solver(solver)
    solver.reset()
    x = noise
    trajectory = [x]
    for i in range(grid.numel() - 1):
        x = solver.step(denoiser, x, grid[i], grid[i + 1], cond, generator)
        if return_trajectory:
            trajectory.append(x)
    solver.reset()
    return (x, trajectory) if return_trajectory else x


class ClassifierFreeGuidance(DenoiserWrapper):
    """Classifier-free guidance as a denoiser: ``pred = pred(uncond) + scale (pred(cond) - pred(uncond))``.

    Combines the two calls in the base denoiser's own prediction type (all conversions are affine in the prediction
    at fixed ``(x, t)``, so the result is the same in every type). ``uncond`` is the null condition (e.g. zero
    embeddings or the null class); the two calls are separate so conditions of any structure work.
    """

    def __init__(self, denoiser: Denoiser, scale: float, uncond: Any) -> None:
        super().__init__(denoiser)
        self.scale = scale
        self.uncond = uncond

    def forward(self, x: Tensor, t: Tensor | float, cond: Any = None) -> Tensor:
        base = self.denoiser(x, t, self.uncond)
        if cond is None or self.scale == 0:
            return base
        return base + self.scale * (self.denoiser(x, t, cond) - base)
