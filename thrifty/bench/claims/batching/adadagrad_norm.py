"""AdAdaGrad-Norm's adaptive batch size against the best fixed batch size, in steps and in samples drawn.

Workload: logistic regression on the digits, AdaGrad-Norm with the same learning rate everywhere. The target is the
final validation loss of the fixed batch of ``B0`` (the controller's starting size), per seed. Every fixed batch
size of the grid the controller spans (``B0`` to the cap in powers of two) is run on the tuning seeds, and the one
that reaches the target with the fewest samples is the baseline; on the judged seeds, AdAdaGrad-Norm must reach the
target in fewer steps than that batch without drawing many more samples. A larger fixed batch takes fewer steps only
by drawing more samples, which the samples clause prices.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from thrifty.batching import AdaptiveBatchSize
from thrifty.bench.claim import INCONCLUSIVE, Claim, ClaimContext, ClaimOutcome, Series
from thrifty.bench.claims import register
from thrifty.bench.compare import compare
from thrifty.bench.experiment import MethodRuns, RunSpec, default_device, first_step_reaching, run_method, tune
from thrifty.bench.workloads import Curve, NonFiniteLossError, fit, make_task
from thrifty.optim import create_optimizer

# (steps, eval_every) per scale
ADADAGRAD_SCALES = {"smoke": (30, 5), "quick": (300, 10), "full": (2000, 20)}
ADADAGRAD_NORM = {"lr": 0.5}  # the same AdaGrad-Norm step size for every run, not tuned
B0, MAX_BATCH, ETA = 16, 1024, 0.5  # the paper card's setting: norm test eta 0.5, from 16, capped at 1024
FIXED_BATCHES = tuple(2**k for k in range(4, 11))  # 16 ... 1024: the sizes the adaptive controller can take
STEPS_MARGIN = 0.20  # "incrementally increase batch sizes" to train in fewer iterations: at least 20% fewer steps
SAMPLES_MARGIN = 0.25  # "training efficiency": at most 25% more samples (gradient evaluations) than the fixed batch


def _spec(scale: str, batch_size: int) -> RunSpec:
    steps, eval_every = ADADAGRAD_SCALES[scale]
    return RunSpec.make(
        "logreg",
        {"batch_size": batch_size},
        "adagrad_norm",
        ADADAGRAD_NORM,
        steps,
        eval_every,
        device=default_device(scale),
    )


def _fixed(ctx: ClaimContext, batch_size: int, seeds: Sequence[int] | None = None) -> MethodRuns:
    label = f"AdaGrad-Norm b={batch_size}" + (" (tuning)" if seeds is not None else "")
    return run_method(ctx, label, _spec(ctx.scale, batch_size), seeds=None if seeds is None else list(seeds))


def _adaptive(ctx: ClaimContext) -> tuple[list[Curve | None], list[str]]:
    """AdAdaGrad-Norm on every judged seed: AdaGrad-Norm with the norm test choosing each next batch size."""
    steps, eval_every = ADADAGRAD_SCALES[ctx.scale]
    label = f"AdAdaGrad-Norm b0={B0}"
    advance = ctx.track(label, steps * len(ctx.seeds))
    curves: list[Curve | None] = []
    failures: list[str] = []
    for seed in ctx.seeds:
        task = make_task("logreg", seed=seed, batch_size=B0, device=default_device(ctx.scale))
        optimizer = create_optimizer(task.model, "adagrad_norm", **ADADAGRAD_NORM)
        controller = AdaptiveBatchSize(B0, MAX_BATCH, test="norm", eta=ETA)
        try:
            curves.append(
                fit(
                    task,
                    optimizer,
                    steps,
                    eval_every=eval_every,
                    on_step=lambda step, loss: advance(1),
                    batch_controller=controller,
                )
            )
        except NonFiniteLossError as exc:
            advance(steps - exc.step)
            curves.append(None)
            failures.append(f"{label} seed {seed}: {exc}")
    return curves, failures


def _to_target(curve: Curve | None, target: float, batch_size: int | None) -> tuple[float, float]:
    """Steps and samples drawn until ``curve`` first reaches ``target`` (inf if never; NaN for a failed run).

    ``batch_size`` is the fixed batch; ``None`` reads the adaptive run's batch size of every step."""
    if curve is None or not math.isfinite(target):
        return math.nan, math.nan
    reach = first_step_reaching(curve, "val_loss", target, False)
    if not math.isfinite(reach):
        return math.inf, math.inf
    samples = batch_size * reach if batch_size is not None else float(sum(curve.batch_sizes[: int(reach)]))
    return reach, samples


def adadagrad_norm_claim(ctx: ClaimContext) -> ClaimOutcome:
    steps, _ = ADADAGRAD_SCALES[ctx.scale]

    def samples_to_target(batch_size: int, seed: int) -> float:
        target = _fixed(ctx, B0, [seed]).finals("val_loss")[0]
        return _to_target(_fixed(ctx, batch_size, [seed]).curves[0], target, batch_size)[1]

    tuning = tune(
        ctx,
        "fixed batch size",
        FIXED_BATCHES,
        samples_to_target,
        f"samples drawn to the b={B0} run's final val loss",
        higher_is_better=False,
    )
    if tuning.chosen is None:
        return ClaimOutcome(INCONCLUSIVE, "every fixed-batch tuning run failed; no baseline", tuning=[tuning.to_dict()])
    best = tuning.chosen
    small, chosen, cap = _fixed(ctx, B0), _fixed(ctx, best), _fixed(ctx, MAX_BATCH)
    ada, ada_failures = _adaptive(ctx)
    targets = small.finals("val_loss")
    ada_steps, ada_samples = zip(*(_to_target(c, t, None) for c, t in zip(ada, targets, strict=True)), strict=True)
    best_steps, best_samples = zip(
        *(_to_target(c, t, best) for c, t in zip(chosen.curves, targets, strict=True)), strict=True
    )
    cap_steps, cap_samples = zip(
        *(_to_target(c, t, MAX_BATCH) for c, t in zip(cap.curves, targets, strict=True)), strict=True
    )
    small_steps = [_to_target(c, t, B0)[0] for c, t in zip(small.curves, targets, strict=True)]
    steps_cmp = compare(
        f"steps to the b={B0} run's final val loss, relative to the best fixed batch (b={best})",
        ada_steps,
        best_steps,
        better="lower",
        margin=STEPS_MARGIN,
        relative=True,
    )
    samples_cmp = compare(
        f"samples drawn to that loss, relative to the best fixed batch (b={best})",
        ada_samples,
        best_samples,
        better="lower",
        margin=SAMPLES_MARGIN,
        kind="noninferior",
        relative=True,
    )
    reported = [
        compare(
            f"steps to that loss, relative to the fixed b={B0}",
            ada_steps,
            small_steps,
            better="lower",
            margin=STEPS_MARGIN,
            relative=True,
        ),
        compare(
            f"steps to that loss, relative to the fixed b={MAX_BATCH} (the cap)",
            ada_steps,
            cap_steps,
            better="lower",
            margin=0.0,
            relative=True,
        ),
        compare(
            f"samples drawn to that loss, relative to the fixed b={MAX_BATCH} (the cap)",
            ada_samples,
            cap_samples,
            better="lower",
            margin=0.0,
            relative=True,
        ),
    ]
    final_sizes = [float(c.batch_sizes[-1]) if c is not None else math.nan for c in ada]
    sizes = Series(label="AdAdaGrad-Norm batch size", metric="batch_size")
    ada_val = Series(label=f"AdAdaGrad-Norm b0={B0}", metric="val_loss")
    for c in ada:
        if c is not None:
            sizes.add(c.steps, c.seconds, c.batch_sizes)
            ada_val.add(c.eval_steps, c.eval_seconds, c.metric("val_loss"))
    runs = {B0: small, best: chosen, MAX_BATCH: cap}
    finite_sizes = [s for s in final_sizes if math.isfinite(s)]
    return ClaimOutcome.judged(
        f"AdAdaGrad-Norm (norm test, eta {ETA}, b0 {B0}, cap {MAX_BATCH}; final batch sizes "
        f"{[int(s) if math.isfinite(s) else s for s in final_sizes]}) against the fixed batch that reached the b={B0} "
        f"run's final val loss with the fewest samples on the tuning seeds (b={best}), over {steps} steps",
        [steps_cmp, samples_cmp],
        reported=reported,
        metrics={
            "best_fixed_batch": float(best),
            "steps_ratio_vs_best_mean": steps_cmp.effect,
            "samples_ratio_vs_best_mean": samples_cmp.effect,
            "adaptive_steps_to_target_mean": steps_cmp.method_mean,
            "best_fixed_steps_to_target_mean": steps_cmp.baseline_mean,
            "adaptive_samples_to_target_mean": samples_cmp.method_mean,
            "best_fixed_samples_to_target_mean": samples_cmp.baseline_mean,
            "final_batch_size_mean": statistics.fmean(finite_sizes) if finite_sizes else math.nan,
        },
        per_seed={
            "target_val_loss": targets,
            "adaptive_steps_to_target": list(ada_steps),
            "adaptive_samples_to_target": list(ada_samples),
            f"b{best}_steps_to_target": list(best_steps),
            f"b{best}_samples_to_target": list(best_samples),
            f"b{MAX_BATCH}_steps_to_target": list(cap_steps),
            f"b{MAX_BATCH}_samples_to_target": list(cap_samples),
            "adaptive_final_batch_size": final_sizes,
        },
        series=[r.series("val_loss") for r in runs.values()] + [ada_val, sizes],
        details={
            "workload": f"logreg on the digits, AdaGrad-Norm {ADADAGRAD_NORM} (same lr for every run), {steps} steps",
            "baseline": f"fixed batch sizes {list(FIXED_BATCHES)} (the sizes the controller spans) run on the tuning "
            f"seeds; the one with the fewest samples to the b={B0} run's final val loss is judged against",
            "samples": "the adaptive run's batch sizes summed until it reaches the target; a fixed run's batch size "
            "times its steps",
            "steps": "the first evaluation step at which val loss reaches the target (evaluation granularity)",
        },
        tuning=[tuning.to_dict()],
        failures=small.failures + chosen.failures + cap.failures + ada_failures,
    )


register(
    Claim(
        key="adadagrad_norm",
        statement="We introduce AdAdaGrad and its scalar variant AdAdaGradNorm, which incrementally increase batch "
        "sizes during training, while model updates are performed using AdaGrad and AdaGradNorm. We prove that "
        "AdaGradNorm converges with high probability at a rate of O(1/K) for finding a first-order stationary "
        "point of smooth nonconvex functions within K iterations.",
        measures=f"steps and samples AdAdaGrad-Norm (AdaGrad-Norm lr {ADADAGRAD_NORM['lr']}, norm test eta {ETA}, "
        f"batch from {B0}, cap {MAX_BATCH}) needs to reach the final validation loss of AdaGrad-Norm at a fixed "
        f"batch of {B0} (same lr and steps), on logistic regression on the digits, against the fixed batch of "
        f"{list(FIXED_BATCHES)} that reaches it with the fewest samples on tuning seeds, paired by judged seed; the "
        f"fixed b={B0} and b={MAX_BATCH} reported",
        threshold=f"90% t-interval of the relative steps change below -{STEPS_MARGIN:.0%} (superior), and of the "
        f"relative samples change below +{SAMPLES_MARGIN:.0%} (non-inferior)",
        run=adadagrad_norm_claim,
        default=True,
    )
)
