"""Claims of the schedule papers: linear decay against cosine, refined schedules against linear decay
(arXiv 2310.07831), the batch-size scaling of the largest stable learning rate and the Lanczos
learning-rate learner against tuned SGD (arXiv 2006.09092)."""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable

import torch

from thrifty.bench.claim import HELD, INCONCLUSIVE, NOT_HELD, Claim, ClaimContext, ClaimOutcome, Series
from thrifty.bench.claims import register
from thrifty.bench.experiment import MethodRuns, RunSpec, default_device, grid_note, run_method, tune_lr
from thrifty.bench.specs import ADAMW, CHARLM, LR_GRID
from thrifty.bench.workloads import Curve, NonFiniteLossError, fit, make_task
from thrifty.optim import create_optimizer
from thrifty.schedules import LanczosLR, refine_schedule

DIGITS = {
    "smoke": ({"batch_size": 32}, 30, 10),
    "quick": ({"batch_size": 64}, 500, 50),
    "full": ({"batch_size": 64}, 3000, 100),
}
DIGITS_ADAMW_GRID = {"smoke": [3e-3], "quick": [3e-3, 1e-2, 3e-2, 1e-1], "full": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]}
SGD_GRID = {"smoke": [0.1], "quick": [0.01, 0.03, 0.1, 0.3], "full": [0.003, 0.01, 0.03, 0.1, 0.3, 1.0]}
SGD_MOMENTUM = 0.9
# "Matches or outperforms": a schedule matches another when its mean final validation loss is within 0.5%.
MATCH_TOLERANCE = 0.005
LANCZOS_TOLERANCE = 0.05
LANCZOS = {"every": 10, "iters": 20}


def _spec(workload: str, scale: str, schedule: str | tuple[float, ...], **opt_kwargs) -> RunSpec:
    """AdamW (betas 0.9/0.95, weight decay 0.01) on ``workload``; the char-LM runs are the SOAP claim's (shared)."""
    config, steps, eval_every = CHARLM[scale] if workload == "charlm" else DIGITS[scale]
    return RunSpec.make(
        workload,
        config,
        "adamw",
        ADAMW | opt_kwargs,
        steps,
        eval_every,
        schedule=schedule,
        device=default_device(scale),
    )


def _grid(workload: str, scale: str) -> list[float]:
    return LR_GRID[scale] if workload == "charlm" else DIGITS_ADAMW_GRID[scale]


def _tuned(ctx: ClaimContext, workload: str, schedule: str) -> tuple[float | None, dict[float, float]]:
    """AdamW's peak learning rate tuned with ``schedule`` on the first seed."""
    base = _spec(workload, ctx.scale, schedule)
    return tune_lr(
        ctx, f"{workload} AdamW {schedule}", base, _grid(workload, ctx.scale), "val_loss", False, ctx.seeds[0]
    )


def _with_lr(spec: RunSpec, lr: float) -> RunSpec:
    return dataclasses.replace(spec, opt_kwargs=tuple(sorted((dict(spec.opt_kwargs) | {"lr": lr}).items())))


def _compare(
    ctx: ClaimContext,
    workloads: tuple[str, ...],
    tuned_with: str,
    names: tuple[str, str],
    pair: Callable[[str, float], tuple[MethodRuns, MethodRuns]],
    note: str,
) -> ClaimOutcome:
    """Tune AdamW's peak lr with the ``tuned_with`` schedule per workload, then compare the final validation
    loss of the two runs ``pair(workload, lr)`` returns (baseline, candidate): held if the candidate's mean
    is at most the baseline's times ``1 + MATCH_TOLERANCE`` on every workload."""
    base_name, cand_name = names
    metrics: dict[str, float] = {}
    per_seed: dict[str, list[float]] = {}
    series: list[Series] = []
    details = {"schedules": note}
    failures: list[str] = []
    ratios = {}
    for workload in workloads:
        lr, table = _tuned(ctx, workload, tuned_with)
        details[f"{workload} AdamW {tuned_with} grid, final val loss (seed {ctx.seeds[0]})"] = grid_note(table)
        if lr is None:
            return ClaimOutcome(INCONCLUSIVE, f"every AdamW run on {workload} diverged", details=details)
        base, cand = pair(workload, lr)
        failures += base.failures + cand.failures
        base_loss, cand_loss = base.mean_final("val_loss"), cand.mean_final("val_loss")
        ratios[workload] = cand_loss / base_loss
        metrics |= {
            f"{workload}_lr": lr,
            f"{workload}_{base_name}_val_loss": base_loss,
            f"{workload}_{cand_name}_val_loss": cand_loss,
            f"{workload}_{cand_name}_over_{base_name}": ratios[workload],
        }
        per_seed[f"{workload}_{base_name}_val_loss"] = base.finals("val_loss")
        per_seed[f"{workload}_{cand_name}_val_loss"] = cand.finals("val_loss")
        series += [base.series("val_loss"), cand.series("val_loss")]
    if not all(math.isfinite(r) for r in ratios.values()):
        return ClaimOutcome(INCONCLUSIVE, "a run diverged", metrics=metrics, details=details, failures=failures)
    verdict = HELD if all(r <= 1 + MATCH_TOLERANCE for r in ratios.values()) else NOT_HELD
    summary = "; ".join(
        f"{w}: {cand_name} {metrics[f'{w}_{cand_name}_val_loss']:.4f} vs {base_name} "
        f"{metrics[f'{w}_{base_name}_val_loss']:.4f} ({r - 1:+.2%})"
        for w, r in ratios.items()
    )
    summary += (
        f" (mean final val loss over {len(ctx.seeds)} seeds, same peak lr; held if {cand_name} <= {base_name} "
        f"x {1 + MATCH_TOLERANCE:g} on every workload)"
    )
    return ClaimOutcome(verdict, summary, metrics, per_seed, series, details, failures)


def linear_decay_claim(ctx: ClaimContext) -> ClaimOutcome:
    def pair(workload: str, lr: float) -> tuple[MethodRuns, MethodRuns]:
        cosine = _with_lr(_spec(workload, ctx.scale, "warmup_cosine"), lr)
        linear = _with_lr(_spec(workload, ctx.scale, "warmup_linear"), lr)
        return (
            run_method(ctx, f"{workload} cosine lr={lr:g}", cosine),
            run_method(ctx, f"{workload} linear lr={lr:g}", linear),
        )

    note = "both warm up linearly over 5% of the steps, then decay to zero (cosine or linear)"
    return _compare(ctx, ("charlm", "digits_mlp"), "warmup_cosine", ("cosine", "linear"), pair, note)


def _refined_runs(ctx: ClaimContext, linear: MethodRuns, workload: str) -> MethodRuns:
    """Per seed, the schedule refined (l1 rule: AdamW) from that seed's linear-decay run, run on the same seed."""
    runs = MethodRuns(f"{workload} refined", linear.spec, [])
    for seed, curve in zip(linear.seeds, linear.curves, strict=True):
        if curve is None:
            continue
        schedule = tuple(round(float(v), 6) for v in refine_schedule(curve.grad_l1_norms, rule="l1"))
        one = run_method(
            ctx, f"{workload} refined seed {seed}", dataclasses.replace(linear.spec, schedule=schedule), [seed]
        )
        runs.seeds.append(seed)
        runs.curves += one.curves
        runs.state_bytes += one.state_bytes
        runs.failures += one.failures
    return runs


def refined_claim(ctx: ClaimContext) -> ClaimOutcome:
    def pair(workload: str, lr: float) -> tuple[MethodRuns, MethodRuns]:
        linear = run_method(
            ctx, f"{workload} linear lr={lr:g}", _with_lr(_spec(workload, ctx.scale, "warmup_linear"), lr)
        )
        return linear, _refined_runs(ctx, linear, workload)

    note = (
        "linear decay after a 5% warm-up; refined: l1 rule (AdamW) from the l1 gradient norms of the same seed's "
        "linear-decay run, median filter tau 0.1"
    )
    return _compare(ctx, ("digits_mlp", "digits_cnn"), "warmup_linear", ("linear", "refined"), pair, note)


def _train_lanczos(scale: str, seed: int, advance) -> tuple[Curve, LanczosLR]:
    """SGD driven by LanczosLR (learning rate and heavy-ball momentum) on the digits MLP, recorded like ``fit``."""
    config, steps, eval_every = DIGITS[scale]
    task = make_task("digits_mlp", seed=seed, device=default_device(scale), **config)
    model = task.model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.0)
    sched = LanczosLR(optimizer, seed=seed, **LANCZOS)
    curve, elapsed = Curve(), 0.0

    def evaluate(step: int) -> None:
        model.eval()
        with torch.no_grad():
            curve.evals.append({k: float(v) for k, v in task.evaluate(model).items()})
        model.train()
        curve.eval_steps.append(step)
        curve.eval_seconds.append(elapsed)

    evaluate(0)
    for step in range(1, steps + 1):
        batch = task.next_batch()
        start = time.perf_counter()
        sched.step(lambda batch=batch: task.loss(model, batch))
        optimizer.zero_grad(set_to_none=True)
        loss = task.loss(model, batch)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        elapsed += time.perf_counter() - start
        if not math.isfinite(value):
            advance(steps - step + 1)
            raise NonFiniteLossError(step, value)
        curve.steps.append(step)
        curve.seconds.append(elapsed)
        curve.train_loss.append(value)
        advance(1)
        if step % eval_every == 0 or step == steps:
            evaluate(step)
    return curve, sched


def lanczos_lr_claim(ctx: ClaimContext) -> ClaimOutcome:
    config, steps, eval_every = DIGITS[ctx.scale]
    base = RunSpec.make(
        "digits_mlp", config, "sgd", {"momentum": SGD_MOMENTUM}, steps, eval_every, device=default_device(ctx.scale)
    )
    lr, table = tune_lr(ctx, "SGD", base, SGD_GRID[ctx.scale], "val_loss", False, ctx.seeds[0])
    details = {f"SGD (momentum {SGD_MOMENTUM}) grid, final val loss (seed {ctx.seeds[0]})": grid_note(table)}
    if lr is None:
        return ClaimOutcome(INCONCLUSIVE, "every SGD run diverged; nothing to compare with", details=details)
    sgd = run_method(ctx, f"SGD lr={lr:g}", _with_lr(base, lr))
    advance = ctx.track("LanczosLR", steps * len(ctx.seeds))
    lanczos = Series("LanczosLR", "val_loss")
    finals, failures, estimates = [], list(sgd.failures), []
    for seed in ctx.seeds:
        try:
            curve, sched = _train_lanczos(ctx.scale, seed, advance)
        except NonFiniteLossError as exc:
            finals.append(math.nan)
            failures.append(f"LanczosLR seed {seed}: {exc}")
            continue
        finals.append(curve.final("val_loss"))
        lanczos.add(curve.eval_steps, curve.eval_seconds, curve.metric("val_loss"))
        estimates.append(sched.history)
    sgd_loss = sgd.mean_final("val_loss")
    lanczos_loss = statistics.fmean(finals)
    ratio = lanczos_loss / sgd_loss
    if not math.isfinite(sgd_loss):
        return ClaimOutcome(INCONCLUSIVE, "a tuned SGD run diverged", details=details, failures=failures)
    verdict = HELD if ratio <= 1 + LANCZOS_TOLERANCE else NOT_HELD
    summary = (
        f"LanczosLR final val loss {lanczos_loss:.4f} vs SGD tuned on {len(table)} rates {sgd_loss:.4f} "
        f"({ratio - 1:+.1%}; held if <= +{LANCZOS_TOLERANCE:.0%}), mean over {len(finals)} seeds"
    )
    if estimates:
        first = estimates[0]
        details["LanczosLR estimates (seed 0: step, lambda_max, lr, momentum)"] = "; ".join(
            f"{h['step']}: {h['lambda_max']:.3g}, {h['lr']:.3g}, {h['momentum']:.2f}"
            for h in first[:: max(1, len(first) // 8)]
        )
    details["LanczosLR"] = (
        f"every {LANCZOS['every']} steps, {LANCZOS['iters']} Lanczos iterations on the current batch; "
        "defaults otherwise (its lr scale 1/4 was chosen once on this workload during development)"
    )
    return ClaimOutcome(
        verdict,
        summary,
        metrics={"lanczos_val_loss": lanczos_loss, "sgd_val_loss": sgd_loss, "ratio": ratio, "sgd_lr": lr},
        per_seed={"lanczos_val_loss": finals, "sgd_val_loss": sgd.finals("val_loss")},
        series=[sgd.series("val_loss"), lanczos],
        details=details,
        failures=failures,
    )


# Largest stable learning rate: bisection on log(lr) between a stable and an unstable end, per batch size.
SCALING = {
    "smoke": {"batch_sizes": (8, 32), "steps": 10, "bisections": 2},
    "quick": {"batch_sizes": (4, 16, 64, 256), "steps": 150, "bisections": 8},
    "full": {"batch_sizes": (4, 8, 16, 32, 64, 128, 256), "steps": 400, "bisections": 10},
}
SCALING_BRACKETS = {"sgd": (1e-3, 1e2), "adam": (1e-5, 10.0)}
SCALING_SLOPES = {"sgd": (0.7, 1.3), "adam": (0.3, 0.7)}


def _trains_stably(optimizer: str, lr: float, batch_size: int, seed: int, steps: int, device: str) -> bool:
    """Stable: no non-finite loss, and the mean training loss of the last fifth of the steps is below half the
    first step's (a run that stalls at chance level, as ReLU networks do after a too-large step, is not)."""
    task = make_task("digits_mlp", seed=seed, batch_size=batch_size, device=device)
    try:
        curve = fit(task, create_optimizer(task.model, optimizer, lr=lr), steps, eval_every=steps)
    except NonFiniteLossError:
        return False
    tail = curve.train_loss[-max(1, steps // 5) :]
    return statistics.fmean(tail) < 0.5 * curve.train_loss[0]


def _largest_stable_lr(optimizer: str, batch_size: int, seed: int, scale: str, advance) -> float:
    steps, bisections = SCALING[scale]["steps"], SCALING[scale]["bisections"]
    low, high = (math.log(v) for v in SCALING_BRACKETS[optimizer])
    for _ in range(bisections):
        mid = 0.5 * (low + high)
        if _trains_stably(optimizer, math.exp(mid), batch_size, seed, steps, default_device(scale)):
            low = mid
        else:
            high = mid
        advance(steps)
    return math.exp(low)


def _slope(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares slope of ``ys`` on ``xs`` and the fit's R^2."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    syy = sum((y - my) ** 2 for y in ys)
    slope = sxy / sxx
    return slope, (sxy * sxy / (sxx * syy) if syy > 0 else 1.0)


def scaling_rules_claim(ctx: ClaimContext) -> ClaimOutcome:
    sizes = SCALING[ctx.scale]["batch_sizes"]
    steps, bisections = SCALING[ctx.scale]["steps"], SCALING[ctx.scale]["bisections"]
    metrics: dict[str, float] = {}
    per_seed: dict[str, list[float]] = {}
    series: list[Series] = []  # x = batch size (the report's "step" axis), y = median largest stable lr
    held = True
    parts = []
    for optimizer, (lo, hi) in SCALING_SLOPES.items():
        advance = ctx.track(f"largest stable lr, {optimizer}", len(sizes) * len(ctx.seeds) * bisections * steps)
        medians = []
        for size in sizes:
            found = [_largest_stable_lr(optimizer, size, seed, ctx.scale, advance) for seed in ctx.seeds]
            per_seed[f"{optimizer}_lr_max_b{size}"] = found
            medians.append(statistics.median(found))
            metrics[f"{optimizer}_lr_max_b{size}"] = medians[-1]
        curve = Series(f"{optimizer} (x: batch size)", "largest stable lr")
        curve.add(list(sizes), list(sizes), medians)
        series.append(curve)
        slope, r2 = _slope([math.log(b) for b in sizes], [math.log(v) for v in medians])
        metrics |= {f"{optimizer}_slope": slope, f"{optimizer}_r2": r2}
        held = held and lo <= slope <= hi
        parts.append(f"{optimizer} slope {slope:.2f} (R^2 {r2:.2f}; held if in [{lo}, {hi}])")
    summary = (
        "log-log slope of the largest stable lr against batch size "
        f"{', '.join(str(b) for b in sizes)} on the digits MLP: " + "; ".join(parts)
    )
    details = {
        "protocol": f"{bisections} bisections of log(lr) per batch size and seed, {steps} steps each, median over "
        f"{len(ctx.seeds)} seeds; stable = finite loss and last-fifth mean training loss < half the first step's",
    }
    return ClaimOutcome(HELD if held else NOT_HELD, summary, metrics, per_seed, series, details)


register(
    Claim(
        key="linear_decay",
        statement="We validate that overall, the linear-decay schedule matches or outperforms all commonly used "
        "default schedules including cosine annealing",
        measures="final validation loss of AdamW with linear decay and with cosine decay (both after a 5% linear "
        "warm-up, same peak lr tuned for cosine on a grid) on the stdlib char-LM and the digits MLP",
        threshold=f"mean final val loss of linear <= cosine's x {1 + MATCH_TOLERANCE:g} on both workloads",
        run=linear_decay_claim,
        default=False,
    )
)
register(
    Claim(
        key="refined",
        statement="we use the observed gradient norms to derive schedules refined for any particular task ... "
        "our schedule refinement method gives further improvements",
        measures="final validation loss of AdamW with linear decay (5% warm-up, peak lr tuned on a grid) and with "
        "the schedule refined (l1 rule) from the gradient norms of that linear-decay run, same seed and peak "
        "lr, on the digits MLP and CNN",
        threshold=f"mean final val loss of refined <= linear's x {1 + MATCH_TOLERANCE:g} on both workloads",
        run=refined_claim,
        default=True,
    )
)
register(
    Claim(
        key="scaling_rules",
        statement="we derive an analytical expressions for the maximal learning rates as a function of batch size, "
        "informing practical training regimens for both stochastic gradient descent (linear scaling) and "
        "adaptive algorithms, such as Adam (square root scaling)",
        measures="largest learning rate at which SGD (no momentum) and Adam train the digits MLP stably, found by "
        "bisection per batch size and seed, and the slope of its logarithm against the batch size's",
        threshold="slope in [0.7, 1.3] for SGD and in [0.3, 0.7] for Adam",
        run=scaling_rules_claim,
        default=True,
    )
)
register(
    Claim(
        key="lanczos_lr",
        statement="we develop a stochastic Lanczos quadrature based on the fly learning rate and momentum learner, "
        "which avoids the need for expensive multiple evaluations for these key hyper-parameters",
        measures="final validation loss on the digits MLP of SGD whose learning rate and heavy-ball momentum "
        "LanczosLR sets (no tuning) and of SGD with momentum 0.9 and its learning rate tuned on a grid",
        threshold=f"LanczosLR's mean final val loss <= tuned SGD's x {1 + LANCZOS_TOLERANCE:g}",
        run=lanczos_lr_claim,
        default=True,
    )
)
