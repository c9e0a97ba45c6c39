"""Schedule refinement: a problem-adaptive learning-rate schedule from the gradient norms of an earlier run.

"When, Why and How Much? Adaptive Learning Rate Scheduling by Refinement" (Defazio, Cutkosky, Mehta,
Mishchenko, arXiv 2310.07831). Their last-iterate bound for a schedule ``eta_1..eta_T`` is minimised,
given the gradient norms ``G_t`` seen along the way, by

    G_hat = median_filter(G, width tau * T)                  (robustify the noisy norms)
    w_t   = G_hat_t ** -2      (rule "l2": SGD-type, G the l2 norms)
    w_t   = G_hat_t ** -1      (rule "l1": Adam-type, G the l1 norms of the gradients)
    eta_t = w_t * sum_{p > t} w_p,   then eta / max(eta)

so constant norms give exactly linear decay to zero at the last step, norms that grow towards the end
give a faster final anneal, and small early norms give warm-up. The paper publishes no training
code; the median filter here follows the authors' plotting scripts (facebookresearch/adaptive_scheduling):
an odd width ``2 * (int(tau * T) // 2) + 1``, the end of the sequence padded by reflection (two widths),
the start by repeating the first value; ``tau = 0.1`` as in their figures. The ``l1`` weights ``G ** -1``
also follow those scripts.

:class:`RefinedLR` applies such a schedule as a ``LambdaLR``, stretched by linear interpolation when the
new run has a different number of steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["RULES", "RefinedLR", "median_smooth", "refine_rule", "refine_schedule"]

RULES = ("l2", "l1")


def _as_norms(grad_norms: Sequence[float] | np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(grad_norms, torch.Tensor):
        grad_norms = grad_norms.detach().cpu().double().numpy()
    g = np.asarray(grad_norms, dtype=np.float64)
    if g.ndim != 1 or g.size == 0:
        raise ValueError(f"grad_norms must be a non-empty 1-D sequence, got shape {g.shape}")
    if not np.all(np.isfinite(g)):
        raise ValueError(f"grad_norms must be finite; step {int(np.argmin(np.isfinite(g)))} is {g[~np.isfinite(g)][0]}")
    if np.any(g <= 0):
        raise ValueError(f"grad_norms must be positive; step {int(np.argmax(g <= 0))} is {g[g <= 0][0]}")
    return g


def median_smooth(grad_norms: Sequence[float] | np.ndarray | torch.Tensor, tau: float = 0.1) -> np.ndarray:
    """The running median of ``grad_norms`` over an odd window of about ``tau * T`` steps (see module doc)."""
    g = _as_norms(grad_norms)
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1], got {tau}")
    width = 2 * (int(tau * g.size) // 2) + 1
    if width == 1:
        return g.copy()
    pad = 2 * width
    padded = np.pad(g, (0, pad), mode="reflect") if g.size > 1 else np.full(g.size + pad, g[0])
    half = width // 2
    padded = np.pad(padded, (half, half), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width)
    return np.median(windows, axis=1)[: g.size]


def refine_rule(optimizer: torch.optim.Optimizer) -> str:
    """The refinement rule the paper prescribes for ``optimizer``: ``"l1"`` for coordinate-wise adaptive methods
    (Adam-type, anything with ``betas``, and coordinate-wise AdaGrad), ``"l2"`` for SGD-type ones."""
    from thrifty.optim.adagrad import AdaGrad

    adaptive = "betas" in optimizer.defaults or isinstance(optimizer, (AdaGrad, torch.optim.Adagrad))
    return "l1" if adaptive else "l2"


def refine_schedule(
    grad_norms: Sequence[float] | np.ndarray | torch.Tensor, *, rule: str = "l2", tau: float = 0.1
) -> np.ndarray:
    """Learning-rate multipliers, one per logged step, refined from the gradient norms of a previous run.

    ``rule="l2"`` (SGD-type methods) expects l2 norms and weights them ``G ** -2``; ``rule="l1"``
    (Adam-type methods) expects l1 norms and weights them ``G ** -1``. ``tau`` is the median filter's
    width as a fraction of the run (0 disables smoothing). The result peaks at 1 and ends at 0.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    smoothed = median_smooth(grad_norms, tau)
    if smoothed.size < 2:
        raise ValueError("grad_norms must cover at least 2 steps to define a schedule")
    # Dividing by the largest norm first makes the schedule invariant to the norms' scale and keeps
    # the weights in floating-point range.
    weights = (smoothed / smoothed.max()) ** (-2.0 if rule == "l2" else -1.0)
    tail = np.concatenate([np.cumsum(weights[::-1])[::-1][1:], [0.0]])  # sum_{p > t} w_p
    eta = weights * tail
    return eta / eta.max()


class RefinedLR(torch.optim.lr_scheduler.LambdaLR):
    """Scale each param group's learning rate by a refined ``schedule`` (one multiplier per step).

    With ``total_steps`` different from ``len(schedule)``, the schedule is stretched onto the new run by
    linear interpolation over the fraction of training done. Call ``step()`` after each ``optimizer.step()``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: Sequence[float] | np.ndarray | torch.Tensor,
        total_steps: int | None = None,
        last_epoch: int = -1,
    ):
        values = np.asarray(schedule.detach().cpu() if isinstance(schedule, torch.Tensor) else schedule, dtype=float)
        if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError("schedule must be a non-empty 1-D sequence of finite, non-negative multipliers")
        total = values.size if total_steps is None else total_steps
        if total < 1:
            raise ValueError(f"total_steps must be at least 1, got {total}")
        if total != values.size:
            old = np.linspace(0.0, 1.0, values.size)
            values = np.interp(np.linspace(0.0, 1.0, total), old, values)
        self.multipliers = [float(v) for v in values]
        last = len(self.multipliers) - 1
        super().__init__(optimizer, lambda step: self.multipliers[min(step, last)], last_epoch=last_epoch)
