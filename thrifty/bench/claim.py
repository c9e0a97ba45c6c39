"""What a claim is: a paper's statement, the measurement that echoes it, and a threshold fixed in code.

A claim function receives a ``ClaimContext`` (scale, seeds, a progress hook) and returns a
``ClaimOutcome``: the verdict it reached by comparing its measurements with the threshold
written here before any run, the figures behind it, and curves for the report's plots.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "HELD",
    "INCONCLUSIVE",
    "NOT_HELD",
    "SCALES",
    "VERDICTS",
    "Claim",
    "ClaimContext",
    "ClaimOutcome",
    "Series",
]

SCALES = ("smoke", "quick", "full")
HELD, NOT_HELD, INCONCLUSIVE = "held", "not held", "inconclusive"
VERDICTS = (HELD, NOT_HELD, INCONCLUSIVE)


@dataclass
class ClaimContext:
    """What a claim run is given: the scale, the seeds, ``track`` for progress bars, ``out_dir`` for figures."""

    scale: str
    seeds: list[int]
    track: Callable[[str, int], Callable[[int], None]] = field(default=lambda description, total: lambda advance: None)
    out_dir: str | None = None  # where a claim may save extra figures (sample grids); None: save none

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {self.scale!r}")
        if not self.seeds:
            raise ValueError("seeds must name at least one seed")


@dataclass
class Series:
    """One method's curves across seeds, for plotting with a seed band.

    ``steps[i]``, ``seconds[i]`` and ``values[i]`` belong to seed ``i``; ``seconds`` is
    training wall-clock time, so the same runs can be plotted against steps and against time.
    """

    label: str
    metric: str
    steps: list[list[float]] = field(default_factory=list)
    seconds: list[list[float]] = field(default_factory=list)
    values: list[list[float]] = field(default_factory=list)

    def add(self, steps: list[float], seconds: list[float], values: list[float]) -> None:
        self.steps.append(list(steps))
        self.seconds.append(list(seconds))
        self.values.append(list(values))


@dataclass
class ClaimOutcome:
    """A claim's result: verdict, a one-line summary with the figures, and the evidence."""

    verdict: str
    summary: str
    metrics: dict[str, float] = field(default_factory=dict)
    per_seed: dict[str, list[float]] = field(default_factory=dict)
    series: list[Series] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Claim:
    """A paper's headline result, echoed at small scale.

    ``statement`` is quoted from the paper's abstract; ``measures`` says what is measured and
    on which workload; ``threshold`` is the pass rule, fixed in code before any run;
    ``default`` puts the claim in ``thrifty bench``'s default suite.
    """

    key: str
    paper: str
    field: str
    statement: str
    measures: str
    threshold: str
    run: Callable[[ClaimContext], ClaimOutcome]
    default: bool = True

    def describe(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "paper": self.paper,
            "field": self.field,
            "statement": self.statement,
            "measures": self.measures,
            "threshold": self.threshold,
        }
