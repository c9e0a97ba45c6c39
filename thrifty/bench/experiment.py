"""Building blocks for claims: train a method over seeds, tune a learning rate, compare curves.

Training runs are memoised within a process by their full specification (workload, config,
optimizer, hyperparameters, schedule, steps, device, seed), so claims that share a baseline, such as
the tuned AdamW of the SOAP and SGD-SaI claims, train it once per ``thrifty bench`` call.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from thrifty.bench.claim import ClaimContext, Series
from thrifty.bench.workloads import Curve, NonFiniteLossError, fit, make_task
from thrifty.optim import create_optimizer, state_bytes
from thrifty.schedules import RefinedLR, linear_decay_factor, warmup_cosine_factor

__all__ = [
    "MethodRuns",
    "RunSpec",
    "clear_cache",
    "default_device",
    "first_step_reaching",
    "grid_note",
    "make_scheduler",
    "run_method",
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


WARMUP_FRAC = 0.05
SCHEDULES = ("constant", "linear", "warmup_linear", "warmup_cosine")


def _warmup_steps(steps: int) -> int:
    return max(1, int(round(WARMUP_FRAC * steps)))


def make_scheduler(
    optimizer: torch.optim.Optimizer, schedule: str | tuple[float, ...], steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The scheduler of a ``RunSpec.schedule``: a name of ``SCHEDULES`` (the warm-up ones warm up over 5% of
    the steps) or a tuple of per-step multipliers (a refined schedule, stretched to ``steps``)."""
    if isinstance(schedule, tuple):
        return RefinedLR(optimizer, schedule, total_steps=steps)
    if schedule == "constant":
        return None
    warmup = _warmup_steps(steps) if schedule.startswith("warmup_") else 0
    if schedule in ("linear", "warmup_linear"):
        factor = linear_decay_factor(steps, warmup)
    elif schedule == "warmup_cosine":
        factor = warmup_cosine_factor(steps, warmup)
    else:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)} or a tuple of multipliers, got {schedule!r}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


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


def tune_lr(
    ctx: ClaimContext,
    label: str,
    spec: RunSpec,
    grid: list[float],
    metric: str,
    higher_is_better: bool,
    seed: int = 0,
) -> tuple[float | None, dict[float, float]]:
    """Pick the learning rate of ``grid`` with the best final ``metric`` on one seed.

    Returns the best rate (``None`` when every run stopped) and the final metric per rate
    (NaN for runs that stopped), which claims record so a reader can judge the tuning.
    """
    table: dict[float, float] = {}
    for lr in grid:
        kwargs = dict(spec.opt_kwargs) | {"lr": lr}
        trial = dataclasses.replace(spec, opt_kwargs=tuple(sorted(kwargs.items())))
        runs = run_method(ctx, f"{label} lr={lr:g}", trial, seeds=[seed])
        table[lr] = runs.finals(metric)[0]
    finite = {lr: v for lr, v in table.items() if math.isfinite(v)}
    if not finite:
        return None, table
    pick = max if higher_is_better else min
    return pick(finite, key=finite.__getitem__), table


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
