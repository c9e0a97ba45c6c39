"""Building blocks for claims: train a method over seeds, tune a learning rate, compare curves.

Training runs are memoised within a process by their full specification (workload, config,
optimizer, hyperparameters, schedule, steps, device, seed), so claims that share a baseline, such as
the tuned AdamW of the SOAP and SGD-SaI claims, train it once per ``thrifty bench`` call.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from thrifty.bench.claim import ClaimContext, Series
from thrifty.bench.workloads import Curve, NonFiniteLossError, fit, make_task
from thrifty.optim import create_optimizer, state_bytes
from thrifty.schedules import make_scheduler

__all__ = [
    "MethodRuns",
    "RunSpec",
    "clear_cache",
    "default_device",
    "first_step_reaching",
    "grid_note",
    "interleaved_step_seconds",
    "make_scheduler",
    "Tuning",
    "run_method",
    "tune",
    "tune_lr",
]


def default_device(scale: str) -> str:
    """The device claims train on at ``scale``: ``"cuda"`` for ``"full"`` when a GPU is present, else ``"cpu"``."""
    return "cuda" if scale == "full" and torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines one training run except the seed."""

    workload: str
    config: tuple[tuple[str, Any], ...]
    optimizer: str
    opt_kwargs: tuple[tuple[str, Any], ...]
    steps: int
    eval_every: int
    schedule: str | tuple[float, ...] = "constant"
    device: str = "cpu"

    @classmethod
    def make(
        cls,
        workload: str,
        config: dict[str, Any],
        optimizer: str,
        opt_kwargs: dict[str, Any],
        steps: int,
        eval_every: int,
        schedule: str | tuple[float, ...] = "constant",
        device: str = "cpu",
    ) -> RunSpec:
        return cls(
            workload,
            tuple(sorted(config.items())),
            optimizer,
            tuple(sorted(opt_kwargs.items())),
            steps,
            eval_every,
            schedule,
            device,
        )

    def key(self, seed: int) -> str:
        return json.dumps(
            [
                self.workload,
                self.config,
                self.optimizer,
                self.opt_kwargs,
                self.steps,
                self.eval_every,
                self.schedule,
                self.device,
                seed,
            ],
            default=str,
        )


@dataclass
class RunRecord:
    curve: Curve | None
    state_bytes: int
    failure: str | None


_CACHE: dict[str, RunRecord] = {}


def clear_cache() -> None:
    """Forget memoised runs (tests use it to measure a claim from scratch)."""
    _CACHE.clear()


def _train(spec: RunSpec, seed: int, advance) -> RunRecord:
    key = spec.key(seed)
    if key in _CACHE:
        advance(spec.steps)
        return _CACHE[key]
    task = make_task(spec.workload, seed=seed, device=spec.device, **dict(spec.config))
    optimizer = create_optimizer(task.model, spec.optimizer, **dict(spec.opt_kwargs))
    scheduler = make_scheduler(optimizer, spec.schedule, spec.steps)
    try:
        curve = fit(
            task,
            optimizer,
            spec.steps,
            eval_every=spec.eval_every,
            scheduler=scheduler,
            on_step=lambda step, loss: advance(1),
        )
        record = RunRecord(curve, state_bytes(optimizer), None)
    except NonFiniteLossError as exc:
        advance(spec.steps - exc.step)
        kwargs = ", ".join(f"{k}={v}" for k, v in spec.opt_kwargs)
        record = RunRecord(None, state_bytes(optimizer), f"{spec.optimizer}({kwargs}) seed {seed}: {exc}")
    _CACHE[key] = record
    return record


@dataclass
class MethodRuns:
    """One method trained over several seeds; failed (non-finite) runs are kept as ``None``."""

    label: str
    spec: RunSpec
    seeds: list[int]
    curves: list[Curve | None] = field(default_factory=list)
    state_bytes: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> list[Curve]:
        return [c for c in self.curves if c is not None]

    def finals(self, metric: str) -> list[float]:
        """The final value of ``metric`` per seed (NaN for a run that stopped)."""
        return [c.final(metric) if c is not None else math.nan for c in self.curves]

    def mean_final(self, metric: str) -> float:
        values = self.finals(metric)
        return sum(values) / len(values) if values else math.nan

    def series(self, metric: str) -> Series:
        s = Series(label=self.label, metric=metric)
        for c in self.ok:
            s.add(c.eval_steps, c.eval_seconds, c.metric(metric))
        return s

    def seconds(self) -> list[float]:
        return [c.seconds[-1] if c is not None else math.nan for c in self.curves]


def run_method(
    ctx: ClaimContext,
    label: str,
    spec: RunSpec,
    seeds: list[int] | None = None,
) -> MethodRuns:
    """Train ``spec`` once per seed (``ctx.seeds`` by default), with a progress bar."""
    seeds = list(ctx.seeds if seeds is None else seeds)
    advance = ctx.track(label, spec.steps * len(seeds))
    runs = MethodRuns(label, spec, seeds)
    for seed in seeds:
        record = _train(spec, seed, advance)
        runs.curves.append(record.curve)
        runs.state_bytes.append(record.state_bytes)
        if record.failure:
            runs.failures.append(record.failure)
    return runs


@dataclass
class Tuning:
    """A choice a claim made: the grid, the tuning seeds it was judged on, the mean metric per grid value, the pick.

    ``ClaimOutcome.tuning`` records ``to_dict()`` so a reader sees what was tried and that no judged seed took part.
    """

    label: str
    metric: str
    higher_is_better: bool
    seeds: list[int]
    table: dict[Any, float]
    chosen: Any

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "tuning_seeds": list(self.seeds),
            "grid": {str(k): v for k, v in self.table.items()},
            "chosen": self.chosen,
        }

    def note(self) -> str:
        """The grid as ``grid_note`` prints it (lower-is-better edge flag), with the tuning seeds."""
        return f"{grid_note(self.table)} (tuning seeds {self.seeds})"


def tune(
    ctx: ClaimContext,
    label: str,
    grid: Sequence[Any],
    evaluate: Callable[[Any, int], float],
    metric: str,
    higher_is_better: bool,
    seeds: Sequence[int] | None = None,
) -> Tuning:
    """Pick the value of ``grid`` with the best mean ``evaluate(value, seed)`` over the tuning seeds.

    The seeds default to ``ctx.tuning_seeds`` and may never include a judged seed (``ctx.seeds``): choices are
    tuned apart from the verdicts they feed. ``chosen`` is ``None`` when every value gave a non-finite metric.
    """
    seeds = list(ctx.tuning_seeds if seeds is None else seeds)
    judged = set(seeds) & set(ctx.seeds)
    if judged:
        raise ValueError(f"{label}: tuning on judged seeds {sorted(judged)}; tune on ctx.tuning_seeds")
    table: dict[Any, float] = {}
    for value in grid:
        results = [evaluate(value, seed) for seed in seeds]
        table[value] = math.nan if any(not math.isfinite(r) for r in results) else sum(results) / len(results)
    finite = {v: r for v, r in table.items() if math.isfinite(r)}
    chosen = None
    if finite:
        pick = max if higher_is_better else min
        chosen = pick(finite, key=finite.__getitem__)
    return Tuning(label, metric, higher_is_better, seeds, table, chosen)


def tune_lr(
    ctx: ClaimContext,
    label: str,
    spec: RunSpec,
    grid: list[float],
    metric: str,
    higher_is_better: bool,
    seeds: Sequence[int] | None = None,
) -> Tuning:
    """Pick the learning rate of ``grid`` with the best mean final ``metric`` over the tuning seeds (``tune``)."""

    def evaluate(lr: float, seed: int) -> float:
        kwargs = dict(spec.opt_kwargs) | {"lr": lr}
        trial = dataclasses.replace(spec, opt_kwargs=tuple(sorted(kwargs.items())))
        return run_method(ctx, f"{label} lr={lr:g} (tuning)", trial, seeds=[seed]).finals(metric)[0]

    return tune(ctx, label, grid, evaluate, metric, higher_is_better, seeds)


def interleaved_step_seconds(specs: Sequence[RunSpec], seed: int, rounds: int, steps_per_round: int = 1) -> list[float]:
    """Median seconds per training step of each spec, measured interleaved in this process.

    Each spec's task and optimizer are built once; every round runs ``steps_per_round`` steps of each spec in
    turn, so load from other processes falls on all of them alike (wall-clock of separate runs does not: on a
    busy machine one run can take ten times another). The first round is a warm-up and is not counted.
    """
    runners = []
    for spec in specs:
        task = make_task(spec.workload, seed=seed, device=spec.device, **dict(spec.config))
        optimizer = create_optimizer(task.model, spec.optimizer, **dict(spec.opt_kwargs))
        runners.append((task, optimizer))
    times: list[list[float]] = [[] for _ in specs]
    for round_ in range(rounds + 1):
        for i, (task, optimizer) in enumerate(runners):
            batches = [task.next_batch() for _ in range(steps_per_round)]
            start = time.perf_counter()
            for batch in batches:
                optimizer.zero_grad(set_to_none=True)
                task.loss(task.model, batch).backward()
                optimizer.step()
            if round_ > 0:
                times[i].append((time.perf_counter() - start) / steps_per_round)
    return [statistics.median(t) for t in times]


def first_step_reaching(curve: Curve, metric: str, target: float, higher_is_better: bool) -> float:
    """The first evaluation step at which ``metric`` reaches ``target`` (inf if it never does)."""
    for step, evals in zip(curve.eval_steps, curve.evals, strict=True):
        value = evals[metric]
        if (value >= target) if higher_is_better else (value <= target):
            return float(step)
    return math.inf


def grid_note(table: dict[float, float]) -> str:
    """Final metric per grid value (lower is better), flagging a best value at the grid's edge.

    A best value at the edge means the optimum may lie outside the grid, which a reader of a
    tuned comparison should know.
    """
    note = ", ".join(f"{lr:g}: {v:.4f}" for lr, v in table.items())
    finite = {lr: v for lr, v in table.items() if math.isfinite(v)}
    if len(table) > 1 and finite:
        best = min(finite, key=finite.__getitem__)
        if best in (min(table), max(table)):
            note += f" (best {best:g} is at the grid's edge)"
    return note
