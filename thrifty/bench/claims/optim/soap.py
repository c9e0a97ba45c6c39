"""SOAP against tuned AdamW on the char-LM: steps (and time) to AdamW's final validation loss."""

from __future__ import annotations

import math
import statistics

from thrifty.bench.claim import INCONCLUSIVE, Claim, ClaimContext, ClaimOutcome
from thrifty.bench.claims import register
from thrifty.bench.compare import compare
from thrifty.bench.experiment import first_step_reaching, interleaved_step_seconds, run_method
from thrifty.bench.specs import charlm_spec, tuned_adamw_charlm

SOAP = {"lr": 3e-3, "betas": (0.95, 0.95), "weight_decay": 0.01, "precondition_frequency": 10}  # the paper's
# char-LM-scale setting (official README defaults, preconditioner every 10 steps); not tuned here
TIMING_ROUNDS = {"smoke": 3, "quick": 20, "full": 20}
STEPS_MARGIN = 0.20  # "over 40% fewer iterations" at scale; here at least 20% fewer (upper bound < 0.8)
TIME_MARGIN = 0.0  # time to AdamW's loss must be below AdamW's (paper: over 35% less); reported, not judged


def soap_claim(ctx: ClaimContext) -> ClaimOutcome:
    tuning, adamw = tuned_adamw_charlm(ctx)
    if adamw is None or not adamw.ok:
        return ClaimOutcome(
            INCONCLUSIVE,
            "every AdamW run diverged; nothing to compare with",
            details={"adamw grid": tuning.note()},
            tuning=[tuning.to_dict()],
        )
    soap = run_method(ctx, "SOAP", charlm_spec(ctx.scale, "soap", **SOAP))
    steps = adamw.spec.steps
    fractions = []
    for a, s in zip(adamw.curves, soap.curves, strict=True):
        if a is None:
            fractions.append(math.nan)
            continue
        reach = first_step_reaching(s, "val_loss", a.final("val_loss"), False) if s is not None else math.inf
        fractions.append(reach / steps)
    # Time per step of both, interleaved in this process on the first judged seed (wall clock of separate runs is
    # meaningless on a shared machine); the time fraction is the steps fraction times this ratio.
    soap_step, adamw_step = interleaved_step_seconds(
        [soap.spec, adamw.spec], ctx.seeds[0], TIMING_ROUNDS[ctx.scale], steps_per_round=2
    )
    step_ratio = soap_step / adamw_step
    time_fractions = [f * step_ratio for f in fractions]
    steps_cmp = compare(
        "steps to AdamW's final val loss, fraction of AdamW's steps",
        fractions,
        1.0,
        better="lower",
        margin=STEPS_MARGIN,
    )
    time_cmp = compare(
        "time to AdamW's final val loss, fraction of AdamW's time (interleaved step timing)",
        time_fractions,
        1.0,
        better="lower",
        margin=TIME_MARGIN,
    )
    finite = [f for f in fractions if math.isfinite(f)]
    reached = f"in {statistics.median(finite):.0%} (median) of" if finite else "not within"
    return ClaimOutcome.judged(
        f"SOAP reached tuned AdamW's final val loss {reached} AdamW's {steps} steps; its step takes "
        f"{step_ratio:.2f}x AdamW's (interleaved)",
        [steps_cmp],
        reported=[time_cmp],
        metrics={
            "steps_fraction_mean": steps_cmp.method_mean,
            "step_time_ratio_interleaved": step_ratio,
            "adamw_final_val_loss": adamw.mean_final("val_loss"),
            "soap_final_val_loss": soap.mean_final("val_loss"),
            "adamw_lr": tuning.chosen,
            "soap_lr": SOAP["lr"],
        },
        per_seed={
            "steps_fraction": fractions,
            "time_fraction": time_fractions,
            "adamw_final_val_loss": adamw.finals("val_loss"),
            "soap_final_val_loss": soap.finals("val_loss"),
        },
        series=[adamw.series("val_loss"), soap.series("val_loss")],
        details={
            "adamw grid": tuning.note(),
            "workload": f"charlm {dict(adamw.spec.config)}, warm-up + cosine schedule",
            "timing": f"median of {TIMING_ROUNDS[ctx.scale]} interleaved rounds of 2 steps each, wall clock",
        },
        tuning=[tuning.to_dict()],
        failures=adamw.failures + soap.failures,
    )


register(
    Claim(
        key="soap",
        statement="In the large batch regime, SOAP reduces the number of iterations by over 40% and wall clock "
        "time by over 35% compared to AdamW",
        measures="steps SOAP (lr 3e-3, betas 0.95/0.95, preconditioner every 10 steps) needs to reach the final "
        "validation loss of AdamW (betas 0.9/0.95, lr tuned on a grid on tuning seeds) on the stdlib char-LM, same "
        "warm-up + cosine schedule, as a fraction of AdamW's steps, per judged seed; time to that loss from step "
        "times measured interleaved in one process (reported)",
        threshold=f"steps fraction: 90% t-interval over seeds below {1 - STEPS_MARGIN:.2f}",
        run=soap_claim,
    )
)
