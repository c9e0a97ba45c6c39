"""What a claim is: a paper's statement, the measurement that echoes it, and a margin fixed in code.

A claim function receives a ``ClaimContext`` (scale, judged seeds, tuning seeds apart from them, a progress
hook) and returns a ``ClaimOutcome``: its judged comparisons (``thrifty.bench.compare``, the one rule every
verdict goes through), the verdict they combine to, the figures behind it, the choices it tuned (on the tuning
seeds only) and curves for the report's plots.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from thrifty.bench.compare import Comparison, combine
from thrifty.catalog import get_paper

__all__ = [
    "HELD",
    "INCONCLUSIVE",
    "NOT_HELD",
    "SCALES",
    "TUNING_SEED_BASE",
    "VERDICTS",
    "Claim",
    "ClaimContext",
    "ClaimOutcome",
    "Series",
]

SCALES = ("smoke", "quick", "full")
HELD, NOT_HELD, INCONCLUSIVE = "held", "not held", "inconclusive"
VERDICTS = (HELD, NOT_HELD, INCONCLUSIVE)
TUNING_SEED_BASE = 1000  # tuning seeds are 1000, 1001, ...: never among the judged seeds 0, 1, 2, ...


@dataclass
class ClaimContext:
    """What a claim run is given: the scale, the judged seeds, the tuning seeds (every choice a claim makes, such as
    a learning rate, is made on these and never on a judged seed), ``track`` for progress bars, ``out_dir`` for
    figures."""

    scale: str
    seeds: list[int]
    track: Callable[[str, int], Callable[[int], None]] = field(default=lambda description, total: lambda advance: None)
    out_dir: str | None = None  # where a claim may save extra figures (sample grids); None: save none
    tuning_seeds: list[int] = field(default_factory=lambda: [TUNING_SEED_BASE])

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {self.scale!r}")
        if not self.seeds:
            raise ValueError("seeds must name at least one seed")
        if not self.tuning_seeds:
            raise ValueError("tuning_seeds must name at least one seed")
        shared = set(self.seeds) & set(self.tuning_seeds)
        if shared:
            raise ValueError(f"tuning seeds must be apart from the judged seeds; both have {sorted(shared)}")


@dataclass
class Series:
    """One method's curves across seeds, for plotting with a seed band.

    ``steps[i]``, ``seconds[i]`` and ``values[i]`` belong to seed ``i``; ``seconds`` is
    training time on ``thrifty.bench.workloads.TRAINING_CLOCK`` (process CPU time), so the same runs can be plotted
    against steps and against time.
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
    """A claim's result: verdict, a one-line summary with the figures, and the evidence.

    ``comparisons`` are the judged comparisons; the verdict is ``combine(comparisons, require)``, which
    ``judged`` computes and the constructor checks. An outcome without comparisons can only be inconclusive
    (nothing could be compared: every baseline run diverged, memory could not be measured), with the reason in
    its summary. ``reported`` comparisons are shown with the same rule but not judged; ``tuning`` records each
    choice the claim made (grid, tuning seeds, value per grid point, the pick).
    """

    verdict: str
    summary: str
    metrics: dict[str, float] = field(default_factory=dict)
    per_seed: dict[str, list[float]] = field(default_factory=dict)
    series: list[Series] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    reported: list[Comparison] = field(default_factory=list)
    tuning: list[dict[str, Any]] = field(default_factory=list)
    require: str = "all"

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if self.comparisons:
            expected = combine(self.comparisons, self.require)
            if self.verdict != expected:
                raise ValueError(f"verdict {self.verdict!r} disagrees with its comparisons, which give {expected!r}")
        elif self.verdict != INCONCLUSIVE:
            raise ValueError("a held or not-held verdict needs the comparisons it rests on")

    @classmethod
    def judged(cls, summary: str, comparisons: list[Comparison], require: str = "all", **evidence: Any) -> ClaimOutcome:
        """The outcome whose verdict is ``combine(comparisons, require)``; the summary gets each comparison's line."""
        verdict = combine(comparisons, require)
        lines = "; ".join(c.describe() for c in comparisons)
        return cls(verdict, f"{summary} [{lines}]", comparisons=list(comparisons), require=require, **evidence)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Claim:
    """A paper's headline result, echoed at small scale.

    ``key`` is one of its catalogue entry's method keys, from which ``paper`` and ``field`` are read (one home
    for each fact); ``statement`` is quoted from the paper's abstract; ``measures`` says what is measured and on
    which workload; ``threshold`` states the comparison rule's margin, fixed in code before any run; ``default``
    puts the claim in ``thrifty bench``'s default suite.
    """

    key: str
    statement: str
    measures: str
    threshold: str
    run: Callable[[ClaimContext], ClaimOutcome]
    default: bool = True

    @property
    def paper(self) -> str:
        """The paper's title and arXiv id, from the catalogue."""
        entry = get_paper(self.key)
        return f"{entry.title} (arXiv {entry.arxiv})" if entry.arxiv else entry.title

    @property
    def field(self) -> str:
        return get_paper(self.key).field

    def describe(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "paper": self.paper,
            "field": self.field,
            "statement": self.statement,
            "measures": self.measures,
            "threshold": self.threshold,
        }
