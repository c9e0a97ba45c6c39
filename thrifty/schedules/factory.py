"""Learning-rate schedules by name, with one warm-up convention for ``thrifty train`` and the claims' runs.

``make_scheduler(optimizer, "warmup_cosine", steps)`` returns the ``LRScheduler`` of a name in ``SCHEDULES`` (or
``None`` for a constant rate) or applies a tuple of per-step multipliers (a refined schedule, stretched to ``steps``).
Warm-up is linear, the multiplier ``(step + 1) / W`` over the first ``W`` steps; the ``warmup_*`` names warm up over
``WARMUP_FRAC`` (5%) of the steps, at least one, and the others start at the peak, unless ``warmup_steps`` says
otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from thrifty.schedules.linear_decay import linear_decay_factor, warmup_cosine_factor
from thrifty.schedules.refined import RefinedLR

__all__ = ["SCHEDULES", "WARMUP_FRAC", "make_scheduler", "schedule_factor", "warmup_steps"]

WARMUP_FRAC = 0.05
SCHEDULES = ("constant", "linear", "cosine", "warmup_linear", "warmup_cosine")


def _check_name(schedule: str) -> None:
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")


def warmup_steps(schedule: str, total_steps: int, warmup: int | None = None) -> int:
    """The warm-up length of ``schedule`` over ``total_steps``: ``warmup`` when given, else 5% of the steps (at
    least 1) for the ``warmup_*`` names and 0 for the others."""
    _check_name(schedule)
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}")
    if warmup is None:
        return max(1, int(round(WARMUP_FRAC * total_steps))) if schedule.startswith("warmup_") else 0
    if not 0 <= warmup <= total_steps:
        raise ValueError(f"warmup must be in [0, total_steps={total_steps}], got {warmup}")
    return warmup


def schedule_factor(schedule: str, total_steps: int, warmup: int | None = None) -> Callable[[int], float] | None:
    """The ``LambdaLR`` multiplier of ``schedule`` (``None`` for a constant rate without warm-up)."""
    w = warmup_steps(schedule, total_steps, warmup)
    decay = schedule.removeprefix("warmup_")
    if decay == "linear":
        return linear_decay_factor(total_steps, w)
    if decay == "cosine":
        return warmup_cosine_factor(total_steps, w)
    if w == 0:
        return None
    return lambda step: min(1.0, (step + 1) / w)


def make_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: str | Sequence[float],
    steps: int,
    warmup: int | None = None,
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The scheduler of ``schedule`` over ``steps`` (see the module doc): a name of ``SCHEDULES`` with an optional
    ``warmup`` length, or per-step multipliers (a refined schedule, which holds its own warm-up)."""
    if not isinstance(schedule, str):
        if warmup:
            raise ValueError("a schedule of multipliers holds its own warm-up; drop warmup")
        return RefinedLR(optimizer, tuple(schedule), total_steps=steps)
    factor = schedule_factor(schedule, steps, warmup)
    return None if factor is None else torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
