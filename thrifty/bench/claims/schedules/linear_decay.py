"""Linear decay against cosine annealing (arXiv 2310.07831): final validation loss at the peak lr tuned for cosine."""

from __future__ import annotations

import dataclasses

from thrifty.bench.claim import INCONCLUSIVE, Claim, ClaimContext, ClaimOutcome, Series
from thrifty.bench.claims import register
from thrifty.bench.claims.schedules.runs import adamw_spec, tuned_peak_lr, with_lr
from thrifty.bench.compare import Comparison, compare
from thrifty.bench.experiment import run_method

WORKLOADS = ("charlm", "digits_mlp")
SCHEDULE, BASELINE = "warmup_linear", "warmup_cosine"  # both warm up over 5% of the steps, then decay to zero
LOSS_MARGIN = 0.01  # "matches or outperforms": linear's final val loss at most 1% above cosine's


def linear_decay_claim(ctx: ClaimContext) -> ClaimOutcome:
    comparisons: list[Comparison] = []
    metrics: dict[str, float] = {}
    per_seed: dict[str, list[float]] = {}
    series: list[Series] = []
    details: dict[str, str] = {
        "schedules": "both warm up linearly over 5% of the steps, then decay to zero (cosine or linear), "
        "at the same peak lr: the one tuned for cosine"
    }
    tuning = []
    failures: list[str] = []
    for workload in WORKLOADS:
        tuned = tuned_peak_lr(ctx, workload, BASELINE)
        tuning.append(tuned.to_dict())
        details[f"{workload} AdamW cosine grid"] = tuned.note()
        if tuned.chosen is None:
            return ClaimOutcome(
                INCONCLUSIVE,
                f"every cosine tuning run on {workload} diverged; nothing to compare",
                details=details,
                tuning=tuning,
            )
        lr = tuned.chosen
        cosine_spec = with_lr(adamw_spec(workload, ctx.scale, BASELINE), lr)
        cosine = run_method(ctx, f"{workload} cosine lr={lr:g}", cosine_spec)
        linear = run_method(ctx, f"{workload} linear lr={lr:g}", dataclasses.replace(cosine_spec, schedule=SCHEDULE))
        failures += cosine.failures + linear.failures
        comparisons.append(
            compare(
                f"{workload} final val loss, linear vs cosine, relative",
                linear.finals("val_loss"),
                cosine.finals("val_loss"),
                better="lower",
                margin=LOSS_MARGIN,
                kind="noninferior",
                relative=True,
            )
        )
        metrics |= {
            f"{workload}_lr": lr,
            f"{workload}_cosine_val_loss": cosine.mean_final("val_loss"),
            f"{workload}_linear_val_loss": linear.mean_final("val_loss"),
        }
        per_seed[f"{workload}_cosine_val_loss"] = cosine.finals("val_loss")
        per_seed[f"{workload}_linear_val_loss"] = linear.finals("val_loss")
        series += [cosine.series("val_loss"), linear.series("val_loss")]
    summary = "; ".join(
        f"{w}: linear {metrics[f'{w}_linear_val_loss']:.4f} vs cosine {metrics[f'{w}_cosine_val_loss']:.4f} "
        f"(lr {metrics[f'{w}_lr']:g})"
        for w in WORKLOADS
    )
    return ClaimOutcome.judged(
        f"final val loss over {len(ctx.seeds)} seeds, {summary}",
        comparisons,
        metrics=metrics,
        per_seed=per_seed,
        series=series,
        details=details,
        failures=failures,
        tuning=tuning,
    )


register(
    Claim(
        key="linear_decay",
        statement="We validate that overall, the linear-decay schedule matches or outperforms all commonly used "
        "default schedules including cosine annealing",
        measures="final validation loss of AdamW with linear decay and with cosine decay (both after a 5% linear "
        "warm-up, same peak lr: the one tuned for cosine on a grid on tuning seeds), paired by judged seed, on the "
        "stdlib char-LM and on the digits MLP",
        threshold=f"on each workload, linear's loss relative to cosine's: 90% t-interval below +{LOSS_MARGIN:.0%}",
        run=linear_decay_claim,
        default=False,
    )
)
