"""Noise schedules in one time convention: ``x_t = alpha(t) x_0 + sigma(t) eps`` with ``t`` in [0, 1], t = 1 is noise.

Every schedule of the field maps onto this convention, so solvers, samplers and distillers never see another:

- ``VPSchedule``: DDPM's discrete variance-preserving schedules (``linear``, ``scaled_linear`` as in Stable Diffusion,
  ``squaredcos_cap_v2`` = cosine), ``alpha_bar[k] = prod_{i<=k} (1 - beta_i)`` for ``k = 0..N-1``; continuous t maps to
  the model timestep ``k = t (N - 1)`` (``timestep(t)``), and ``log alpha_bar`` is interpolated linearly between the
  integers. ``alpha = sqrt(alpha_bar)``, ``sigma = sqrt(1 - alpha_bar)``.
- ``EDMSchedule``: variance exploding, ``alpha = 1``,
  ``sigma(t) = (s_min^(1/rho) + t (s_max^(1/rho) - s_min^(1/rho)))^rho`` (Karras et al. 2022), so a uniform grid in t
  is EDM's rho-grid.
- ``RectifiedFlowSchedule``: ``alpha = 1 - t``, ``sigma = t`` (flow matching; diffusers' FlowMatch and SD3 use this
  convention; the RectifiedFlow/BOSS/SlimFlow repositories use ``t_theirs = 1 - t``).

Interface (all take and return tensors, broadcast over ``t``): ``alpha(t)``, ``sigma(t)``, ``log_snr(t) = 2 log(alpha /
sigma)``, ``derivatives(t) -> (dalpha/dt, dsigma/dt)``, ``t_from_log_snr(lam)`` (monotone inverse, bisection unless
overridden), ``timestep(t)`` (the value a model trained on the original convention receives).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "EDMSchedule",
    "NoiseSchedule",
    "RectifiedFlowSchedule",
    "VPSchedule",
    "as_time",
]

_TINY = 1e-20


def as_time(t: Tensor | float, like: Tensor | None = None) -> Tensor:
    """``t`` as a floating tensor (on ``like``'s device and dtype when given)."""
    if isinstance(t, Tensor):
        t = t if t.is_floating_point() else t.float()
        return t.to(like.dtype) if like is not None and t.dtype != like.dtype else t
    dtype = like.dtype if like is not None else torch.get_default_dtype()
    device = like.device if like is not None else None
    return torch.tensor(float(t), dtype=dtype, device=device)


class NoiseSchedule:
    """Base class: ``x_t = alpha(t) x_0 + sigma(t) eps``, t in [0, 1], t = 1 is (close to) pure noise."""

    def alpha(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def log_snr(self, t: Tensor) -> Tensor:
        """``lambda(t) = 2 log(alpha / sigma)``, decreasing in t (clamped to finite values at the end points)."""
        t = as_time(t)
        return 2 * (torch.log(self.alpha(t).clamp_min(_TINY)) - torch.log(self.sigma(t).clamp_min(_TINY)))

    def derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(dalpha/dt, dsigma/dt)`` by automatic differentiation (subclasses override with closed forms)."""
        t = as_time(t)
        with torch.enable_grad():
            tt = t.detach().clone().requires_grad_(True)
            (da,) = torch.autograd.grad(self.alpha(tt).sum(), tt)
            tt2 = t.detach().clone().requires_grad_(True)
            (ds,) = torch.autograd.grad(self.sigma(tt2).sum(), tt2)
        return da, ds

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor | float) -> Tensor:
        """``alpha(t) x0 + sigma(t) noise`` with ``t`` a scalar or one time per sample."""
        t = as_time(t, x0)
        a, s = _expand(self.alpha(t), x0), _expand(self.sigma(t), x0)
        return a * x0 + s * noise

    def t_from_log_snr(self, lam: Tensor, iterations: int = 60) -> Tensor:
        """The t with ``log_snr(t) = lam`` (bisection on [0, 1]; lam outside the range clips to an end point)."""
        lam = as_time(lam)
        lo, hi = torch.zeros_like(lam), torch.ones_like(lam)
        for _ in range(iterations):
            mid = (lo + hi) / 2
            above = self.log_snr(mid) > lam  # log-SNR decreases in t: the root lies to the right
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        return (lo + hi) / 2

    def timestep(self, t: Tensor) -> Tensor:
        """The time value a model trained in the schedule's original convention receives (identity by default)."""
        return as_time(t)


def _expand(v: Tensor, like: Tensor) -> Tensor:
    """Broadcast a scalar or per-sample ``(B,)`` tensor against ``like`` of shape ``(B, ...)``."""
    v = v.to(like.dtype)
    if v.dim() == 0:
        return v
    return v.reshape(v.shape[0], *([1] * (like.dim() - 1)))


class VPSchedule(NoiseSchedule):
    """DDPM variance-preserving schedule from ``N`` discrete betas, mapped to continuous t.

    ``beta_schedule``: ``"linear"`` (betas evenly spaced in [beta_start, beta_end]), ``"scaled_linear"`` (Stable
    Diffusion: evenly spaced in sqrt), or ``"squaredcos_cap_v2"``/``"cosine"`` (Nichol & Dhariwal, betas capped at
    0.999); the same names and defaults as diffusers' schedulers. ``timestep(t) = t (N - 1)``.
    """

    def __init__(
        self,
        beta_schedule: str = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        num_train_timesteps: int = 1000,
        betas: Tensor | None = None,
    ) -> None:
        if betas is None:
            n = num_train_timesteps
            if beta_schedule == "linear":
                betas = torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
            elif beta_schedule == "scaled_linear":
                betas = torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
            elif beta_schedule in ("squaredcos_cap_v2", "cosine"):

                def f(u: float) -> float:
                    return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

                betas = torch.tensor([min(1 - f((i + 1) / n) / f(i / n), 0.999) for i in range(n)], dtype=torch.float64)
            else:
                raise ValueError(
                    f"unknown beta_schedule {beta_schedule!r}; expected linear, scaled_linear or squaredcos_cap_v2"
                )
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.dim() != 1 or betas.numel() < 2 or bool(((betas <= 0) | (betas >= 1)).any()):
            raise ValueError("betas must be a 1-D tensor of at least 2 values in (0, 1)")
        self.beta_schedule = beta_schedule
        self.num_train_timesteps = betas.numel()
        self.log_alpha_bar = torch.cumsum(torch.log1p(-betas), 0)

    def _log_alpha_bar(self, t: Tensor) -> Tensor:
        t = as_time(t)
        table = self.log_alpha_bar.to(t.dtype if t.is_floating_point() else torch.float32).to(t.device)
        k = t.clamp(0, 1) * (self.num_train_timesteps - 1)
        lo = k.detach().floor().clamp(max=self.num_train_timesteps - 2).long()
        frac = k - lo.to(k.dtype)
        return table[lo] * (1 - frac) + table[lo + 1] * frac

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(0.5 * self._log_alpha_bar(t))

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(-torch.expm1(self._log_alpha_bar(t)))

    def timestep(self, t: Tensor) -> Tensor:
        return as_time(t) * (self.num_train_timesteps - 1)

    def t_from_timestep(self, k: Tensor | float) -> Tensor:
        """Continuous t of the discrete (or fractional) DDPM timestep ``k``."""
        return as_time(k) / (self.num_train_timesteps - 1)


class EDMSchedule(NoiseSchedule):
    """Variance-exploding schedule of EDM (Karras et al. 2022): ``alpha = 1``, ``sigma`` on EDM's rho-warped axis."""

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max, self.rho = sigma_min, sigma_max, rho

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(as_time(t))

    def sigma(self, t: Tensor) -> Tensor:
        t = as_time(t)
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return (lo + t * (hi - lo)) ** self.rho

    def derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        t = as_time(t)
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return torch.zeros_like(t), self.rho * (hi - lo) * (lo + t * (hi - lo)) ** (self.rho - 1)

    def t_from_sigma(self, sigma: Tensor | float) -> Tensor:
        """Inverse of ``sigma(t)``."""
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return (as_time(sigma) ** (1 / self.rho) - lo) / (hi - lo)

    def t_from_log_snr(self, lam: Tensor, iterations: int = 60) -> Tensor:
        return self.t_from_sigma(torch.exp(-as_time(lam) / 2)).clamp(0, 1)

    def timestep(self, t: Tensor) -> Tensor:
        """EDM's network receives ``c_noise = log(sigma) / 4``."""
        return torch.log(self.sigma(t)) / 4


class RectifiedFlowSchedule(NoiseSchedule):
    """Rectified flow / flow matching: ``x_t = (1 - t) x_0 + t eps``; velocity ``dx/dt = eps - x_0``.

    ``timestep_scale`` multiplies t for the model input (diffusers' FlowMatch models take ``1000 t``).
    """

    def __init__(self, timestep_scale: float = 1.0) -> None:
        self.timestep_scale = timestep_scale

    def alpha(self, t: Tensor) -> Tensor:
        return 1 - as_time(t)

    def sigma(self, t: Tensor) -> Tensor:
        return as_time(t).clone()

    def derivatives(self, t: Tensor) -> tuple[Tensor, Tensor]:
        t = as_time(t)
        return -torch.ones_like(t), torch.ones_like(t)

    def t_from_log_snr(self, lam: Tensor, iterations: int = 60) -> Tensor:
        # alpha / sigma = (1 - t) / t = exp(lam / 2)  =>  t = 1 / (1 + exp(lam / 2))
        return torch.sigmoid(-as_time(lam) / 2)

    def timestep(self, t: Tensor) -> Tensor:
        return as_time(t) * self.timestep_scale
