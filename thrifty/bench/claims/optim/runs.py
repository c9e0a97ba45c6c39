"""Helpers of the optimizer claims: hand-written training runs of the claims that do not train through
``thrifty.bench.experiment`` (SSO's closure-style steps, AGVM's two-half backward), one run's loss curve and the
seed-band series of several, and the tuning seeds of a choice that needs more than one."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from thrifty.bench.claim import ClaimContext, Series

__all__ = ["LossRun", "loss_series", "tuning_seeds"]


@dataclass
class LossRun:
    """One training run: an x axis (output-gradient evaluations or steps), seconds and a loss per point."""

    steps: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    failure: str | None = None

    @property
    def final(self) -> float:
        """The last recorded loss; NaN for a run whose loss became non-finite."""
        return self.values[-1] if self.failure is None else math.nan


def loss_series(label: str, metric: str, runs: list[LossRun]) -> Series:
    """The finished runs' curves as one plotted series (one curve per seed)."""
    s = Series(label=label, metric=metric)
    for r in runs:
        if r.failure is None:
            s.add(r.steps, r.seconds, r.values)
    return s


def tuning_seeds(ctx: ClaimContext, count: int) -> list[int]:
    """``count`` tuning seeds: ``ctx.tuning_seeds``, extended by counting on from its last one when it has fewer.

    A choice tuned on one seed can sit at the edge of stability (a learning rate just below the cliff where that
    seed's run still trains) and blow up on other seeds; tuning on several keeps such a choice out.
    """
    seeds = list(ctx.tuning_seeds[:count])
    while len(seeds) < count:
        seeds.append(seeds[-1] + 1)
    return seeds
