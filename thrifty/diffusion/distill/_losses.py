"""Tensor-level pieces the trajectory distillers share: distances, couplings, schedules of their knobs.

Everything here is a function of tensors (and, for the LPIPS substitute, a frozen feature module), so
each can be pinned against a hand-written formula. Conventions: the batch is dimension 0; "per sample"
means reduced over every other dimension; t = 1 is noise (as in :mod:`thrifty.diffusion.core`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

__all__ = [
    "ANNEALING_KINDS",
    "FeatureDistance",
    "annealed_noise",
    "annealing_beta",
    "cauchy_loss",
    "ict_discretisation",
    "ict_huber_c",
    "mse_loss",
    "ot_coupling",
    "per_sample_sq_norm",
    "pseudo_huber_loss",
    "segment_start",
    "td_scale_c",
]

ANNEALING_KINDS = ("linear", "exp", "cos")


def per_sample_sq_norm(diff: Tensor) -> Tensor:
    """``||diff_i||^2`` summed over every non-batch dimension: shape ``(B,)``."""
    return diff.reshape(diff.shape[0], -1).pow(2).sum(dim=1)


def _weighted_mean(values: Tensor, weight: Tensor | None) -> Tensor:
    return values.mean() if weight is None else (values * weight).mean()


def mse_loss(pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Per-sample mean squared error (mean over data dimensions, as ``reduce_mean=True`` in the RF repos),
    times an optional per-sample ``weight``, averaged over the batch."""
    per_sample = (pred - target).reshape(pred.shape[0], -1).pow(2).mean(dim=1)
    return _weighted_mean(per_sample, weight)


def pseudo_huber_loss(pred: Tensor, target: Tensor, c: float | Tensor, weight: Tensor | None = None) -> Tensor:
    """iCT's pseudo-Huber distance ``sqrt(||x - y||^2 + c^2) - c`` per sample (Song & Dhariwal 2023, eq. 9)."""
    c = torch.as_tensor(c, dtype=pred.dtype, device=pred.device)
    return _weighted_mean(torch.sqrt(per_sample_sq_norm(pred - target) + c * c) - c, weight)


def cauchy_loss(pred: Tensor, target: Tensor, c: float | Tensor, weight: Tensor | None = None) -> Tensor:
    """The Cauchy (Lorentzian) distance ``log(1 + ||x - y||^2 / (2 c^2))`` per sample.

    Improved LCT (arXiv 2502.01441) replaces iCT's pseudo-Huber with it: its gradient decays like
    ``1/||x - y||`` for large residuals, so impulsive outliers barely move the model. The ``2 c^2`` form is
    Barron's robust-loss parametrisation [the exact constant in the paper is unverified; only the scale of
    ``c`` changes with it].
    """
    c = torch.as_tensor(c, dtype=pred.dtype, device=pred.device)
    return _weighted_mean(torch.log1p(per_sample_sq_norm(pred - target) / (2.0 * c * c)), weight)


def ict_huber_c(dim: int) -> float:
    """iCT's pseudo-Huber constant ``c = 0.00054 sqrt(d)`` for data of ``d`` dimensions."""
    if dim <= 0:
        raise ValueError(f"dim must be positive, got {dim}")
    return 0.00054 * math.sqrt(dim)


def td_scale_c(pred: Tensor, target: Tensor, quantile: float = 0.5, floor: float = 1e-4) -> Tensor:
    """Adaptive scaling-c (improved LCT): ``c`` from the batch's temporal-difference residuals.

    ``c`` is the ``quantile`` of the per-sample residual norms ``||f(x_{t_{n+1}}) - f(x_{t_n})||`` (detached),
    never below ``floor``. As the discretisation grows and the residuals shrink, ``c`` anneals with them, so
    the Cauchy loss keeps treating the bulk as inliers and the impulsive tail as outliers. The paper sets ``c``
    from TD statistics and anneals it; the exact statistic is unverified (its code is unreleased), so the
    quantile is a parameter.
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    norms = per_sample_sq_norm((pred - target).detach()).sqrt()
    return torch.quantile(norms, quantile).clamp_min(floor)


def ict_discretisation(step: int, total_steps: int, s0: int = 10, s1: int = 1280) -> int:
    """iCT's exponential discretisation curriculum: ``N(k) = min(s0 2^floor(k / K'), s1) + 1``,
    ``K' = floor(K / (log2(s1 / s0) + 1))`` (Song & Dhariwal 2023, eq. 8)."""
    if total_steps <= 0 or s0 <= 0 or s1 < s0:
        raise ValueError(f"need total_steps > 0 and 0 < s0 <= s1, got {total_steps}, {s0}, {s1}")
    k_prime = max(1, math.floor(total_steps / (math.log2(s1 / s0) + 1)))
    return min(s0 * 2 ** (step // k_prime), s1) + 1


def ot_coupling(noise: Tensor, data: Tensor) -> Tensor:
    """Minibatch optimal-transport coupling: ``noise`` permuted so that ``noise[i]`` pairs with ``data[i]``.

    The permutation minimises ``sum_i ||noise[pi(i)] - data[i]||^2`` (Hungarian algorithm,
    ``scipy.optimize.linear_sum_assignment``), as in minibatch OT flow matching; improved LCT couples the
    consistency-training noise with the data this way.
    """
    if noise.shape != data.shape:
        raise ValueError(f"noise and data must have the same shape, got {tuple(noise.shape)} and {tuple(data.shape)}")
    cost = torch.cdist(data.reshape(data.shape[0], -1).double(), noise.reshape(noise.shape[0], -1).double()).pow(2)
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    perm = torch.as_tensor(np.asarray(cols)[np.argsort(rows)], device=noise.device)
    return noise[perm]


def annealing_beta(step: int, warmup: int, kind: str = "linear") -> float:
    """SlimFlow's annealing-reflow randomness ``beta``, from 1 at step 0 towards 0 over ``warmup`` steps.

    ``linear``: ``1 - min(1, k / W)``; ``cos``: ``(1 + cos(pi min(1, k / W))) / 2``; ``exp``: ``exp(-k / W)``
    (the three ``x0_randomness`` warmups of ``yuanzhi-zhu/SlimFlow:reflow/reflow.py``).
    """
    if warmup <= 0:
        raise ValueError(f"warmup must be positive, got {warmup}")
    if kind == "linear":
        return 1.0 - min(1.0, step / warmup)
    if kind == "cos":
        return (1.0 + math.cos(math.pi * min(1.0, step / warmup))) / 2.0
    if kind == "exp":
        return math.exp(-step / warmup)
    raise ValueError(f"kind must be one of {ANNEALING_KINDS}, got {kind!r}")


def annealed_noise(z: Tensor, beta: float, generator: torch.Generator | None = None) -> Tensor:
    """``sqrt(1 - beta^2) z + beta xi`` with fresh ``xi ~ N(0, I)``: still standard normal, but only partly
    paired with the teacher's output (beta = 1: independent noise, plain flow matching; beta = 0: reflow)."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    if beta == 0.0:
        return z
    xi = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
    return math.sqrt(1.0 - beta * beta) * z + beta * xi


def segment_start(t: Tensor, segments: int) -> Tensor:
    """Hyper-SD's trajectory segments: the lower boundary ``s_j = j / k`` of the segment ``(s_j, s_{j+1}]``
    holding ``t`` (t = 1 is noise, so the segment's start is where its consistency target lives)."""
    if segments < 1:
        raise ValueError(f"segments must be at least 1, got {segments}")
    index = torch.ceil(t * segments - 1e-6).clamp(1, segments) - 1
    return index / segments


class FeatureDistance(nn.Module):
    """The LPIPS substitute: ``||phi(x) - phi(y)||^2`` per sample over a frozen feature network ``phi``,
    plus ``l2_weight`` times the per-sample MSE (InstaFlow / SlimFlow use LPIPS or ``lpips+l2``).

    ``phi`` is frozen here (``requires_grad_(False)``, eval mode); gradients still flow to ``x``.
    With ``features=None`` it is the plain MSE.
    """

    def __init__(self, features: nn.Module | None = None, l2_weight: float = 1.0) -> None:
        super().__init__()
        if features is None and l2_weight <= 0:
            raise ValueError("without features the l2 weight must be positive")
        self.features = features.eval().requires_grad_(False) if features is not None else None
        self.l2_weight = float(l2_weight)

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        per_sample = torch.zeros(pred.shape[0], dtype=pred.dtype, device=pred.device)
        if self.features is not None:
            fp, ft = self.features(pred), self.features(target)
            per_sample = per_sample + (fp - ft).reshape(fp.shape[0], -1).pow(2).mean(dim=1)
        if self.l2_weight:
            per_sample = per_sample + self.l2_weight * (pred - target).reshape(pred.shape[0], -1).pow(2).mean(dim=1)
        return _weighted_mean(per_sample, weight)
