"""Batch-size scaling of the largest stable learning rate (arXiv 2006.09092): linear for SGD, square root for Adam.

Per judged seed and batch size, bisection on log(lr) finds the largest learning rate at which the digits MLP
trains stably; the slope of log(lr_max) against log(batch size) is fitted per seed, and the slopes over seeds are
judged equivalent to the paper's exponent (1 for SGD, 1/2 for Adam).
"""

from __future__ import annotations

import math
import statistics

from thrifty.bench.claim import Claim, ClaimContext, ClaimOutcome, Series
from thrifty.bench.claims import register
from thrifty.bench.compare import compare
from thrifty.bench.experiment import default_device
from thrifty.bench.workloads import NonFiniteLossError, fit, make_task
from thrifty.optim import create_optimizer

# The search protocol, fixed: batch sizes, steps per trial run, bisections of log(lr) within the bracket.
SCALING = {
    "smoke": {"batch_sizes": (8, 32), "steps": 10, "bisections": 2},
    "quick": {"batch_sizes": (4, 16, 64, 256), "steps": 150, "bisections": 8},
    "full": {"batch_sizes": (4, 8, 16, 32, 64, 128, 256), "steps": 400, "bisections": 10},
}
BRACKETS = {"sgd": (1e-3, 1e2), "adam": (1e-5, 10.0)}
# The paper's exponents and the margins of "linear" and "square root" scaling: a slope within 0.3 of 1 for SGD
# (in [0.7, 1.3]) and within 0.2 of 1/2 for Adam (in [0.3, 0.7]), so the two ranges do not overlap.
EXPONENTS = {"sgd": (1.0, 0.3), "adam": (0.5, 0.2)}
STABLE_FRACTION = 0.5  # stable: last fifth's mean training loss below half the first step's


def trains_stably(optimizer: str, lr: float, batch_size: int, seed: int, steps: int, device: str) -> bool:
    """Stable: no non-finite loss, and the mean training loss of the last fifth of the steps is below half the
    first step's (a run that stalls at chance level, as ReLU networks do after a too-large step, is not)."""
    task = make_task("digits_mlp", seed=seed, batch_size=batch_size, device=device)
    try:
        curve = fit(task, create_optimizer(task.model, optimizer, lr=lr), steps, eval_every=steps)
    except NonFiniteLossError:
        return False
    tail = curve.train_loss[-max(1, steps // 5) :]
    return statistics.fmean(tail) < STABLE_FRACTION * curve.train_loss[0]


def largest_stable_lr(optimizer: str, batch_size: int, seed: int, scale: str, advance) -> float:
    """The stable end of the bracket after bisecting log(lr) (the bracket's low end if nothing was stable)."""
    steps, bisections = SCALING[scale]["steps"], SCALING[scale]["bisections"]
    low, high = (math.log(v) for v in BRACKETS[optimizer])
    for _ in range(bisections):
        mid = 0.5 * (low + high)
        if trains_stably(optimizer, math.exp(mid), batch_size, seed, steps, default_device(scale)):
            low = mid
        else:
            high = mid
        advance(steps)
    return math.exp(low)


def log_log_slope(sizes: list[int], lrs: list[float]) -> float:
    """Least-squares slope of log(lr) on log(batch size)."""
    xs, ys = [math.log(b) for b in sizes], [math.log(v) for v in lrs]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def scaling_rules_claim(ctx: ClaimContext) -> ClaimOutcome:
    sizes = list(SCALING[ctx.scale]["batch_sizes"])
    steps, bisections = SCALING[ctx.scale]["steps"], SCALING[ctx.scale]["bisections"]
    metrics: dict[str, float] = {}
    per_seed: dict[str, list[float]] = {}
    series: list[Series] = []  # x = batch size (the report's "step" axis), y = largest stable lr, one curve per seed
    comparisons = []
    for optimizer, (exponent, margin) in EXPONENTS.items():
        advance = ctx.track(f"largest stable lr, {optimizer}", len(sizes) * len(ctx.seeds) * bisections * steps)
        found = {seed: [largest_stable_lr(optimizer, b, seed, ctx.scale, advance) for b in sizes] for seed in ctx.seeds}
        curve = Series(f"{optimizer} (x: batch size)", "largest stable lr")
        for lrs in found.values():
            curve.add(sizes, sizes, lrs)
        series.append(curve)
        for i, b in enumerate(sizes):
            per_seed[f"{optimizer}_lr_max_b{b}"] = [lrs[i] for lrs in found.values()]
            metrics[f"{optimizer}_lr_max_b{b}_median"] = statistics.median(per_seed[f"{optimizer}_lr_max_b{b}"])
        slopes = [log_log_slope(sizes, lrs) for lrs in found.values()]
        per_seed[f"{optimizer}_slope"] = slopes
        metrics[f"{optimizer}_slope_mean"] = statistics.fmean(slopes)
        comparisons.append(
            compare(
                f"{optimizer} log-log slope of lr_max on batch size, minus {exponent:g}",
                slopes,
                exponent,
                better="higher",
                margin=margin,
                kind="equivalent",
            )
        )
    return ClaimOutcome.judged(
        "log-log slope of the largest stable lr against batch size "
        f"{', '.join(str(b) for b in sizes)} on the digits MLP, per seed: SGD mean {metrics['sgd_slope_mean']:.2f}, "
        f"Adam mean {metrics['adam_slope_mean']:.2f}",
        comparisons,
        metrics=metrics,
        per_seed=per_seed,
        series=series,
        details={
            "protocol": f"{bisections} bisections of log(lr) in {BRACKETS} per batch size and seed, {steps} steps "
            f"each; stable = finite loss and last-fifth mean training loss < {STABLE_FRACTION:g} x the first step's; "
            "one least-squares slope per seed",
        },
    )


register(
    Claim(
        key="scaling_rules",
        statement="we derive an analytical expressions for the maximal learning rates as a function of batch size, "
        "informing practical training regimens for both stochastic gradient descent (linear scaling) and "
        "adaptive algorithms, such as Adam (square root scaling)",
        measures="largest learning rate at which SGD (no momentum) and Adam train the digits MLP stably, found by "
        "bisection per batch size and judged seed, and per seed the least-squares slope of its logarithm against "
        "the batch size's",
        threshold="slopes over seeds equivalent to the paper's exponent: 90% t-interval within "
        + " and within ".join(f"{e:g} +- {m:g} for {name}" for name, (e, m) in EXPONENTS.items()),
        run=scaling_rules_claim,
    )
)
