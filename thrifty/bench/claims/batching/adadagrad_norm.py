"""Claims of the batch-size papers: AdAdaGrad-Norm's adaptive batch size against a fixed small batch."""

from __future__ import annotations

import math
import statistics

from thrifty.batching import AdaptiveBatchSize
from thrifty.bench.claim import HELD, INCONCLUSIVE, NOT_HELD, Claim, ClaimContext, ClaimOutcome, Series
from thrifty.bench.claims import register
from thrifty.bench.experiment import default_device, first_step_reaching
from thrifty.bench.workloads import Curve, NonFiniteLossError, fit, make_task
from thrifty.optim import create_optimizer

# (steps, eval_every) per scale; logistic regression on the digits, AdaGrad-Norm with the same lr everywhere.
ADADAGRAD_SCALES = {"smoke": (30, 5), "quick": (300, 10), "full": (2000, 20)}
ADADAGRAD_NORM = {"lr": 0.5}
SMALL_BATCH, LARGE_BATCH, MAX_BATCH, ETA = 16, 512, 1024, 0.5
STEPS_RATIO_THRESHOLD = 0.8


def _run(ctx: ClaimContext, label: str, batch_size: int, adaptive: bool) -> tuple[list[Curve | None], list[str]]:
    """Train logreg with AdaGrad-Norm on every seed: a fixed ``batch_size``, or the norm test from it."""
    steps, eval_every = ADADAGRAD_SCALES[ctx.scale]
    advance = ctx.track(label, steps * len(ctx.seeds))
    curves: list[Curve | None] = []
    failures: list[str] = []
    for seed in ctx.seeds:
        task = make_task("logreg", seed=seed, batch_size=batch_size, device=default_device(ctx.scale))
        optimizer = create_optimizer(task.model, "adagrad_norm", **ADADAGRAD_NORM)
        controller = AdaptiveBatchSize(batch_size, MAX_BATCH, test="norm", eta=ETA) if adaptive else None
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


def _val_series(label: str, curves: list[Curve | None]) -> Series:
    series = Series(label=label, metric="val_loss")
    for c in curves:
        if c is not None:
            series.add(c.eval_steps, c.eval_seconds, c.metric("val_loss"))
    return series


def adadagrad_norm_claim(ctx: ClaimContext) -> ClaimOutcome:
    steps, _ = ADADAGRAD_SCALES[ctx.scale]
    small, small_failures = _run(ctx, f"AdaGrad-Norm b={SMALL_BATCH}", SMALL_BATCH, False)
    large, large_failures = _run(ctx, f"AdaGrad-Norm b={LARGE_BATCH}", LARGE_BATCH, False)
    ada, ada_failures = _run(ctx, f"AdAdaGrad-Norm b0={SMALL_BATCH}", SMALL_BATCH, True)
    failures = small_failures + large_failures + ada_failures
    pairs = [(s, a) for s, a in zip(small, ada, strict=True) if s is not None and a is not None]
    if not pairs:
        return ClaimOutcome(INCONCLUSIVE, "every seed had a run that diverged", failures=failures)
    ratios, sample_ratios, grew, final_sizes = [], [], [], []
    for s, a in pairs:
        reach = first_step_reaching(a, "val_loss", s.final("val_loss"), False)
        ratios.append(reach / steps)
        # samples the adaptive run drew until it reached the target, against the small batch's whole run
        used = sum(a.batch_sizes[: int(reach)]) if math.isfinite(reach) else math.inf
        sample_ratios.append(used / (SMALL_BATCH * steps))
        grew.append(a.batch_sizes[-1] > a.batch_sizes[0])
        final_sizes.append(a.batch_sizes[-1])
    ratio = statistics.median(ratios)
    verdict = HELD if ratio <= STEPS_RATIO_THRESHOLD and all(grew) else NOT_HELD
    reached = f"in {ratio:.0%} of" if math.isfinite(ratio) else "not within"
    large_reach = [
        first_step_reaching(g, "val_loss", s.final("val_loss"), False) / steps
        for s, g in zip(small, large, strict=True)
        if s is not None and g is not None
    ]
    summary = (
        f"AdAdaGrad-Norm (norm test, eta {ETA}, b0 {SMALL_BATCH}, cap {MAX_BATCH}) reached the fixed b={SMALL_BATCH} "
        f"run's final val loss {reached} its {steps} steps (median over {len(pairs)} seeds; held if <= "
        f"{STEPS_RATIO_THRESHOLD:.0%} and the batch grew on every seed: grew on {sum(grew)}/{len(grew)}, final "
        f"sizes {final_sizes}); it drew {statistics.median(sample_ratios):.1f}x the samples to get there; fixed "
        f"b={LARGE_BATCH} took {statistics.median(large_reach) if large_reach else math.nan:.0%} of the steps"
    )
    sizes = Series(label="AdAdaGrad-Norm batch size", metric="batch_size")
    for _, a in pairs:
        sizes.add(a.steps, a.seconds, a.batch_sizes)
    finals = {
        name: [c.final("val_loss") if c is not None else math.nan for c in curves]
        for name, curves in (("small", small), ("large", large), ("adaptive", ada))
    }
    return ClaimOutcome(
        verdict,
        summary,
        metrics={
            "steps_ratio_median": ratio,
            "samples_ratio_median": statistics.median(sample_ratios),
            "large_batch_steps_ratio_median": statistics.median(large_reach) if large_reach else math.nan,
            "final_batch_size_mean": statistics.fmean(final_sizes),
            "small_batch_seconds_mean": statistics.fmean(s.seconds[-1] for s, _ in pairs),
            "adaptive_seconds_mean": statistics.fmean(a.seconds[-1] for _, a in pairs),
            "small_batch_final_val_loss": statistics.fmean(finals["small"]),
            "large_batch_final_val_loss": statistics.fmean(finals["large"]),
            "adaptive_final_val_loss": statistics.fmean(finals["adaptive"]),
        },
        per_seed={
            "steps_ratio": ratios,
            "samples_ratio": sample_ratios,
            "final_batch_size": [float(b) for b in final_sizes],
            "small_batch_final_val_loss": finals["small"],
            "adaptive_final_val_loss": finals["adaptive"],
        },
        series=[
            _val_series(f"AdaGrad-Norm b={SMALL_BATCH}", small),
            _val_series(f"AdaGrad-Norm b={LARGE_BATCH}", large),
            _val_series(f"AdAdaGrad-Norm b0={SMALL_BATCH}", ada),
            sizes,
        ],
        details={
            "workload": f"logreg on the digits, AdaGrad-Norm {ADADAGRAD_NORM} (same lr for every run), {steps} steps",
            "samples": "the adaptive run reaches the target in fewer steps by drawing larger batches; samples_ratio "
            f"is the samples it drew until then over the b={SMALL_BATCH} run's total (reported, not judged)",
            "large batch": f"fixed b={LARGE_BATCH} is context from the paper's setup (reported, not judged)",
            "seconds": "training seconds (measured, CPU) include the adaptive run's per-sample gradients for the test",
        },
        failures=failures,
    )


register(
    Claim(
        key="adadagrad_norm",
        statement="We introduce AdAdaGrad and its scalar variant AdAdaGradNorm, which incrementally increase batch "
        "sizes during training, while model updates are performed using AdaGrad and AdaGradNorm. We prove that "
        "AdaGradNorm converges with high probability at a rate of O(1/K) for finding a first-order stationary "
        "point of smooth nonconvex functions within K iterations.",
        measures=f"optimizer steps AdAdaGrad-Norm (AdaGrad-Norm lr {ADADAGRAD_NORM['lr']}, norm test eta {ETA}, "
        f"batch from {SMALL_BATCH}, cap {MAX_BATCH}) needs to reach the final validation loss of AdaGrad-Norm at a "
        f"fixed batch of {SMALL_BATCH} (same lr and steps), as a fraction of those steps, and its batch-size curve, "
        f"on logistic regression on the digits; a fixed batch of {LARGE_BATCH} is run for context",
        threshold=f"median over seeds of the steps fraction <= {STEPS_RATIO_THRESHOLD}, and the batch size grew "
        "during training on every seed",
        run=adadagrad_norm_claim,
        default=True,
    )
)
