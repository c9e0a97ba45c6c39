"""Run claims with progress bars and collect their results; a crash in one claim never stops the rest."""

from __future__ import annotations

import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from thrifty.bench.claim import SCALES, Claim, ClaimContext, ClaimOutcome
from thrifty.bench.env import environment

__all__ = ["DEFAULT_SEEDS", "BenchRun", "ClaimResult", "run_claims"]

DEFAULT_SEEDS = {"smoke": 2, "quick": 3, "full": 5}


@dataclass
class ClaimResult:
    """One claim's run: its outcome, or the error that stopped it, and how long it took."""

    claim: Claim
    outcome: ClaimOutcome | None
    seconds: float
    error: str | None = None

    @property
    def verdict(self) -> str:
        return self.outcome.verdict if self.outcome is not None else "error"

    def to_dict(self) -> dict[str, Any]:
        record = self.claim.describe()
        record.update(verdict=self.verdict, seconds=round(self.seconds, 2), error=self.error)
        if self.outcome is not None:
            record.update(self.outcome.to_dict())
        return record


@dataclass
class BenchRun:
    """Everything ``thrifty bench`` measured in one invocation."""

    scale: str
    seeds: list[int]
    results: list[ClaimResult] = field(default_factory=list)
    env: dict[str, Any] = field(default_factory=environment)
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        """True when some claim crashed (a bug, unlike a claim that did not hold)."""
        return any(r.error is not None for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "seeds": self.seeds,
            "seconds": round(self.seconds, 2),
            "environment": self.env,
            "claims": [r.to_dict() for r in self.results],
        }


def run_claims(
    claims: Sequence[Claim],
    scale: str = "quick",
    seeds: int | Sequence[int] | None = None,
    console: Console | None = None,
    out_dir: str | None = None,
) -> BenchRun:
    """Run each claim at ``scale`` over ``seeds`` (a count or explicit seeds), with progress bars; claims may save
    extra figures under ``out_dir``."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if seeds is None:
        seeds = DEFAULT_SEEDS[scale]
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise ValueError("seeds must be at least 1")
    console = console or Console(stderr=True)
    run = BenchRun(scale=scale, seeds=seed_list)
    start = time.perf_counter()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=not console.is_terminal) as progress:
        overall = progress.add_task(f"claims ({scale})", total=len(claims))
        for claim in claims:
            current: list[Any] = []

            def track(description: str, total: int, _claim: Claim = claim, _current: list = current):
                if _current:
                    progress.remove_task(_current.pop())
                task_id = progress.add_task(f"  {_claim.key}: {description}", total=total)
                if not console.is_terminal:  # no live bars in a log or a pipe: one line per phase instead
                    console.print(f"  {_claim.key}: {description}")
                _current.append(task_id)
                return lambda advance=1: progress.advance(task_id, advance)

            ctx = ClaimContext(scale=scale, seeds=seed_list, track=track, out_dir=out_dir)
            t0 = time.perf_counter()
            try:
                outcome = claim.run(ctx)
                result = ClaimResult(claim, outcome, time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001 - one claim's bug must not stop the others
                tb = traceback.format_exc()
                result = ClaimResult(claim, None, time.perf_counter() - t0, error=f"{exc!r}\n{tb}")
                console.print(f"[red]claim {claim.key} crashed:[/red] {exc!r}")
            if current:
                progress.remove_task(current.pop())
            console.print(f"{claim.key}: {result.verdict} ({result.seconds:.0f} s)")
            run.results.append(result)
            progress.advance(overall)
    run.seconds = time.perf_counter() - start
    return run
