"""Linear decay and warm-up + cosine learning-rate schedules, as multipliers and as ``LRScheduler`` objects.

Linear decay is the schedule that the last-iterate analysis of "When, Why and How Much? Adaptive
Learning Rate Scheduling by Refinement" (Defazio, Cutkosky, Mehta, Mishchenko, arXiv 2310.07831)
recommends in the worst case: after an optional linear warm-up over ``W`` steps,

    eta_t = eta_peak * (1 - (t - W) / (T - W)),        t = W, ..., T - 1,

and ``eta_t = eta_peak * (t + 1) / W`` before. Warm-up + cosine is the common baseline it is compared
with. Every function returns a multiplier of the optimizer's learning rate (``LambdaLR`` convention:
``step`` counts the optimizer steps already taken).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["linear_decay", "linear_decay_factor", "warmup_cosine", "warmup_cosine_factor"]


def _check_steps(total_steps: int, warmup_steps: int) -> None:
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")


def linear_decay_factor(total_steps: int, warmup_steps: int = 0) -> Callable[[int], float]:
    """The multiplier ``step -> factor`` of linear warm-up then linear decay to zero at ``total_steps``."""
    _check_steps(total_steps, warmup_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, 1.0 - (step - warmup_steps) / max(1, total_steps - warmup_steps))

    return factor


def linear_decay(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0, last_epoch: int = -1
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`linear_decay_factor`; call ``step()`` after each ``optimizer.step()``."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_decay_factor(total_steps, warmup_steps), last_epoch=last_epoch
    )


def warmup_cosine_factor(total_steps: int, warmup_steps: int = 0) -> Callable[[int], float]:
    """The multiplier of linear warm-up over ``warmup_steps`` then cosine decay to zero at ``total_steps``."""
    _check_steps(total_steps, warmup_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0, last_epoch: int = -1
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`warmup_cosine_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine_factor(total_steps, warmup_steps), last_epoch=last_epoch
    )
