"""Refined schedules against linear decay (arXiv 2310.07831): final validation loss on the digits MLP and CNN."""

from __future__ import annotations

import dataclasses

import numpy as np

from thrifty.bench.claim import INCONCLUSIVE, Claim, ClaimContext, ClaimOutcome, Series
from thrifty.bench.claims import register
from thrifty.bench.claims.schedules.runs import adamw_spec, tuned_peak_lr, with_lr
from thrifty.bench.compare import Comparison, compare
from thrifty.bench.experiment import RunSpec, run_method
from thrifty.bench.workloads import Curve
from thrifty.schedules import refine_schedule

WORKLOADS = ("digits_mlp", "digits_cnn")
LOSS_MARGIN = 0.01  # "further improvements": refined's final val loss at least 1% below linear decay's
TAU = 0.1  # median-filter width as a fraction of the run, the authors' value (thrifty.schedules.refined)


def refined_spec(linear: RunSpec, curves: list[Curve]) -> RunSpec:
    """``linear`` with its schedule replaced by the one refined (l1 rule, for AdamW) from the mean per-step l1
    gradient norms of ``curves``, linear-decay runs of the same task on the tuning seeds."""
    norms = np.mean([c.grad_l1_norms for c in curves], axis=0)
    schedule = tuple(round(float(v), 6) for v in refine_schedule(norms, rule="l1", tau=TAU))
    return dataclasses.replace(linear, schedule=schedule)


def refined_claim(ctx: ClaimContext) -> ClaimOutcome:
    comparisons: list[Comparison] = []
    metrics: dict[str, float] = {}
    per_seed: dict[str, list[float]] = {}
    series: list[Series] = []
    details: dict[str, str] = {
        "schedules": "linear decay after a 5% warm-up; refined: the l1 rule (AdamW) applied to the mean l1 "
        f"gradient norms of the linear-decay runs on the tuning seeds at the tuned peak lr, median filter tau {TAU}; "
        "both at that peak lr"
    }
    tuning = []
    failures: list[str] = []
    for workload in WORKLOADS:
        tuned = tuned_peak_lr(ctx, workload, "warmup_linear")
        tuning.append(tuned.to_dict())
        details[f"{workload} AdamW linear grid"] = tuned.note()
        if tuned.chosen is None:
            return ClaimOutcome(
                INCONCLUSIVE,
                f"every linear-decay tuning run on {workload} diverged; nothing to refine",
                details=details,
                tuning=tuning,
            )
        lr = tuned.chosen
        linear_spec = with_lr(adamw_spec(workload, ctx.scale, "warmup_linear"), lr)
        first = run_method(ctx, f"{workload} linear lr={lr:g} (tuning)", linear_spec, seeds=ctx.tuning_seeds)
        linear = run_method(ctx, f"{workload} linear lr={lr:g}", linear_spec)
        refined = run_method(ctx, f"{workload} refined lr={lr:g}", refined_spec(linear_spec, first.ok))
        failures += linear.failures + refined.failures
        comparisons.append(
            compare(
                f"{workload} final val loss, refined vs linear, relative",
                refined.finals("val_loss"),
                linear.finals("val_loss"),
                better="lower",
                margin=LOSS_MARGIN,
                relative=True,
            )
        )
        metrics |= {
            f"{workload}_lr": lr,
            f"{workload}_linear_val_loss": linear.mean_final("val_loss"),
            f"{workload}_refined_val_loss": refined.mean_final("val_loss"),
        }
        per_seed[f"{workload}_linear_val_loss"] = linear.finals("val_loss")
        per_seed[f"{workload}_refined_val_loss"] = refined.finals("val_loss")
        series += [linear.series("val_loss"), refined.series("val_loss")]
    summary = "; ".join(
        f"{w}: refined {metrics[f'{w}_refined_val_loss']:.4f} vs linear {metrics[f'{w}_linear_val_loss']:.4f} "
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
        key="refined",
        statement="we use the observed gradient norms to derive schedules refined for any particular task ... "
        "our schedule refinement method gives further improvements",
        measures="final validation loss of AdamW with linear decay (5% warm-up, peak lr tuned on a grid on tuning "
        "seeds) and with the schedule refined (l1 rule) from the gradient norms of linear-decay runs on the tuning "
        "seeds, same peak lr, paired by judged seed, on the digits MLP and CNN",
        threshold=f"on each workload, refined's loss relative to linear's: 90% t-interval below -{LOSS_MARGIN:.0%}",
        run=refined_claim,
    )
)
