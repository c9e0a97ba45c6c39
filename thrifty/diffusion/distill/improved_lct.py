"""Improved latent consistency training (Dao et al., ICLR 2025, arXiv 2502.01441; "sLCT").

Consistency *training* (no teacher) after iCT (Song & Dhariwal 2023), with the paper's changes for latent data,
whose impulsive outliers make iCT's pseudo-Huber loss chase a few huge temporal differences:

- iCT's base: Karras noise levels ``sigma_1 < ... < sigma_N`` (``sigma_min = 0.002``, ``sigma_max = 80``,
  ``rho = 7``) with the exponential curriculum ``N(k)``, lognormal level sampling (``P_mean = -1.1``,
  ``P_std = 2``), weights ``1 / (sigma_{i+1} - sigma_i)``, and the stop-gradient target ``f_theta-(x_{sigma_i})``
  with ``theta- = theta`` (no EMA). Levels map to thrifty's time by ``sigma / alpha = sigma_i``.
- **Cauchy loss** ``log(1 + ||f(x_{i+1}) - sg f(x_i)||^2 / (2 c^2))`` instead of pseudo-Huber (``loss="cauchy"``).
- **Diffusion loss at early timesteps**: ``lambda_diff ||f(x_{i+1}) - x0||^2`` on the samples whose time is at most
  ``diffusion_t_max`` (small noise, where the denoising target is well posed).
- **OT coupling**: the noise of the batch is matched to the data by the Hungarian algorithm.
- **Adaptive scaling-c**: ``c`` from the batch's TD residuals (``td_scale_c``), so it anneals as they shrink.
- **Non-scaling LayerNorm** (LayerNorm without the learnable scale) is :class:`NonScalingLayerNorm`, for users'
  architectures.

The paper's code is unreleased; the exact ``c`` statistic and the diffusion-loss threshold and weight are
unverified and exposed as parameters. ``loss="pseudo_huber"`` with ``c=None`` (iCT's ``0.00054 sqrt(d)``),
``diffusion_weight=0``, ``ot=False`` is plain iCT.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thrifty.diffusion.core.denoiser import Denoiser
from thrifty.diffusion.distill._core import Distiller
from thrifty.diffusion.distill._losses import (
    cauchy_loss,
    ict_discretisation,
    ict_huber_c,
    ot_coupling,
    pseudo_huber_loss,
    td_scale_c,
)

__all__ = ["LOSSES", "ImprovedLCT", "NonScalingLayerNorm", "karras_levels", "lognormal_level_probs"]

LOSSES = ("cauchy", "pseudo_huber")


def karras_levels(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> Tensor:
    """``n`` increasing noise levels ``(s_min^(1/rho) + i/(n-1) (s_max^(1/rho) - s_min^(1/rho)))^rho`` (float64)."""
    if n < 2:
        raise ValueError(f"need at least 2 noise levels, got {n}")
    i = torch.arange(n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (lo + i / (n - 1) * (hi - lo)) ** rho


def lognormal_level_probs(levels: Tensor, p_mean: float = -1.1, p_std: float = 2.0) -> Tensor:
    """iCT's probabilities of the adjacent pairs ``(sigma_i, sigma_{i+1})``:
    ``erf((log s_{i+1} - P_mean) / (sqrt2 P_std)) - erf((log s_i - P_mean) / (sqrt2 P_std))``, normalised."""
    cdf = torch.erf((torch.log(levels) - p_mean) / (math.sqrt(2) * p_std))
    p = cdf[1:] - cdf[:-1]
    return p / p.sum()


class NonScalingLayerNorm(nn.Module):
    """LayerNorm with a learnable bias but no learnable scale (improved LCT's "Non-scaling LayerNorm")."""

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float = 1e-5) -> None:
        super().__init__()
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(self.normalized_shape))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, None, self.bias, self.eps)


class ImprovedLCT(Distiller):
    """Consistency training of ``student`` (its ``x0`` prediction is the consistency function) on data batches.

    Consistency *training* has no teacher, so the constructor takes the student alone, ``ImprovedLCT(student, *,
    ...)``; ``fit(data, steps)`` is every distiller's, with ``data`` a loader of clean ``x0`` batches.
    ``total_steps`` sets the discretisation curriculum (``s0`` to ``s1`` levels over that many steps; pass the
    ``steps`` of ``fit``). ``c``: a number, ``None`` (iCT's ``0.00054 sqrt(d)``) or ``"adaptive"`` (``td_scale_c``
    with ``c_quantile``).

    Example::

        lct = ImprovedLCT(student, total_steps=4000)
        lct.fit(loader, steps=4000)
        x = consistency_sample(student, torch.randn(16, 2), steps=2)
    """

    def __init__(
        self,
        student: Denoiser,
        *,
        total_steps: int,
        loss: str = "cauchy",
        c: float | str | None = "adaptive",
        c_quantile: float = 0.5,
        diffusion_weight: float = 1.0,
        diffusion_t_max: float = 0.2,
        ot: bool = True,
        s0: int = 10,
        s1: int = 1280,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        rho: float = 7.0,
        p_mean: float = -1.1,
        p_std: float = 2.0,
        generator: torch.Generator | None = None,
        **kw,
    ) -> None:
        super().__init__(student, **kw)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if isinstance(c, str) and c != "adaptive":
            raise ValueError(f"c must be a number, None or 'adaptive', got {c!r}")
        ict_discretisation(0, total_steps, s0, s1)  # validates the curriculum
        self.total_steps, self.loss_name, self.c, self.c_quantile = total_steps, loss, c, c_quantile
        self.diffusion_weight, self.diffusion_t_max, self.ot = diffusion_weight, diffusion_t_max, ot
        self.s0, self.s1, self.sigma_min, self.sigma_max, self.rho = s0, s1, sigma_min, sigma_max, rho
        self.p_mean, self.p_std, self.generator = p_mean, p_std, generator
        self.last_c = math.nan

    def times(self, levels: Tensor) -> Tensor:
        """Thrifty times whose VE noise level ``sigma(t) / alpha(t)`` equals ``levels``."""
        return self.student.schedule.t_from_log_snr(-2 * torch.log(levels)).float()

    def loss(self, batch: Tensor, step: int) -> Tensor:
        x0 = batch
        levels = karras_levels(
            ict_discretisation(min(step, self.total_steps - 1), self.total_steps, self.s0, self.s1),
            self.sigma_min,
            self.sigma_max,
            self.rho,
        )
        probs = lognormal_level_probs(levels, self.p_mean, self.p_std)
        i = torch.multinomial(probs, x0.shape[0], replacement=True, generator=self.generator)
        t_lo, t_hi = self.times(levels[i]).to(x0), self.times(levels[i + 1]).to(x0)
        weight = (1.0 / (levels[i + 1] - levels[i])).to(x0)
        z = torch.randn(x0.shape, generator=self.generator).to(x0)
        if self.ot:
            z = ot_coupling(z, x0)
        schedule = self.student.schedule
        pred = self.student.predict(schedule.add_noise(x0, z, t_hi), t_hi).x0
        with torch.no_grad():
            target = self.student.predict(schedule.add_noise(x0, z, t_lo), t_lo).x0
        if self.c == "adaptive":
            c = td_scale_c(pred, target, self.c_quantile)
        else:
            c = self.c if self.c is not None else ict_huber_c(x0[0].numel())
        self.last_c = float(c)
        distance = cauchy_loss if self.loss_name == "cauchy" else pseudo_huber_loss
        loss = distance(pred, target, c, weight)
        if self.diffusion_weight:
            early = (t_hi <= self.diffusion_t_max).to(x0)
            per_sample = (pred - x0).reshape(x0.shape[0], -1).pow(2).mean(dim=1)
            loss = loss + self.diffusion_weight * (early * per_sample).mean()
        return loss
