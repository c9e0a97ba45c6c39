"""Hand-written training runs of the optimizer claims that do not train through ``thrifty.bench.experiment``
(SSO's closure-style steps, AGVM's two-half backward): one run's loss curve, and the seed-band series of several."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from thrifty.bench.claim import Series

__all__ = ["LossRun", "loss_series"]


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
