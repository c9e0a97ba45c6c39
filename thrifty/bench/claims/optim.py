"""Claims of the optimizer papers: SOAP, SGD-SaI and diffGrad, each against a tuned torch baseline."""

from __future__ import annotations

import math
import statistics

from thrifty.bench.claim import HELD, INCONCLUSIVE, NOT_HELD, Claim, ClaimContext, ClaimOutcome
from thrifty.bench.claims import register
from thrifty.bench.experiment import RunSpec, default_device, first_step_reaching, grid_note, run_method, tune_lr

CHARLM = {
    "smoke": (
        {
            "n_layer": 1,
            "d_model": 32,
            "n_head": 2,
            "context": 32,
            "batch_size": 8,
            "max_chars": 200_000,
            "eval_batches": 2,
        },
        24,
        6,
    ),
    "quick": ({"n_layer": 2, "d_model": 128, "n_head": 4, "context": 64, "batch_size": 32}, 300, 20),
    "full": ({"n_layer": 6, "d_model": 256, "n_head": 8, "context": 256, "batch_size": 64}, 4000, 100),
}
LR_GRID = {"smoke": [3e-3], "quick": [3e-4, 1e-3, 3e-3], "full": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]}
ADAMW = {"betas": (0.9, 0.95), "weight_decay": 0.01}


def _charlm_spec(scale: str, optimizer: str, **opt_kwargs) -> RunSpec:
    config, steps, eval_every = CHARLM[scale]
    return RunSpec.make(
        "charlm",
        config,
        optimizer,
        opt_kwargs,
        steps,
        eval_every,
        schedule="warmup_cosine",
        device=default_device(scale),
    )


def _tuned_adamw(ctx: ClaimContext):
    """AdamW with betas (0.9, 0.95), its learning rate tuned on seed 0 of the grid, run on all seeds."""
    lr, table = tune_lr(
        ctx,
        "AdamW",
        _charlm_spec(ctx.scale, "adamw", **ADAMW),
        LR_GRID[ctx.scale],
        "val_loss",
        higher_is_better=False,
        seed=ctx.seeds[0],
    )
    runs = None if lr is None else run_method(ctx, f"AdamW lr={lr:g}", _charlm_spec(ctx.scale, "adamw", lr=lr, **ADAMW))
    return lr, table, runs


def soap_claim(ctx: ClaimContext) -> ClaimOutcome:
    lr, table, adamw = _tuned_adamw(ctx)
    if adamw is None or not adamw.ok:
        return ClaimOutcome(
            INCONCLUSIVE,
            "every AdamW run diverged; nothing to compare with",
            details={"adamw_grid_final_val_loss": grid_note(table)},
        )
    soap = run_method(
        ctx,
        "SOAP",
        _charlm_spec(ctx.scale, "soap", lr=3e-3, betas=(0.95, 0.95), weight_decay=0.01, precondition_frequency=10),
    )
    steps = adamw.spec.steps
    ratios, time_ratios = [], []
    for a, s in zip(adamw.curves, soap.curves, strict=True):
        if a is None:
            continue
        target = a.final("val_loss")
        reach = first_step_reaching(s, "val_loss", target, False) if s is not None else math.inf
        ratios.append(reach / steps)
        if s is not None and math.isfinite(reach):
            time_ratios.append(s.seconds[int(reach) - 1] / a.seconds[-1] if reach > 0 else 0.0)
        else:
            time_ratios.append(math.inf)
    ratio = statistics.median(ratios)
    verdict = HELD if ratio <= 0.8 else NOT_HELD
    reached = f"in {ratio:.0%} of" if math.isfinite(ratio) else "not within"
    summary = (
        f"SOAP reached AdamW's final val loss {reached} AdamW's {steps} steps "
        f"(median over {len(ratios)} seeds; held if <= 80%); wall-clock ratio "
        f"{statistics.median(time_ratios):.2f}"
    )
    return ClaimOutcome(
        verdict,
        summary,
        metrics={
            "steps_ratio_median": ratio,
            "seconds_ratio_median": statistics.median(time_ratios),
            "adamw_final_val_loss": adamw.mean_final("val_loss"),
            "soap_final_val_loss": soap.mean_final("val_loss"),
            "adamw_lr": lr,
            "soap_lr": 3e-3,
            "adamw_seconds_mean": statistics.fmean(x for x in adamw.seconds() if math.isfinite(x)),
            "soap_seconds_mean": statistics.fmean(x for x in soap.seconds() if math.isfinite(x))
            if soap.ok
            else math.nan,
        },
        per_seed={
            "steps_ratio": ratios,
            "adamw_final_val_loss": adamw.finals("val_loss"),
            "soap_final_val_loss": soap.finals("val_loss"),
        },
        series=[adamw.series("val_loss"), soap.series("val_loss")],
        details={
            "adamw_grid_final_val_loss (seed 0)": grid_note(table),
            "workload": f"charlm {dict(adamw.spec.config)}, warm-up + cosine schedule",
        },
        failures=adamw.failures + soap.failures,
    )


def sgd_sai_claim(ctx: ClaimContext) -> ClaimOutcome:
    lr, table, adamw = _tuned_adamw(ctx)
    if adamw is None or not adamw.ok:
        return ClaimOutcome(
            INCONCLUSIVE,
            "every AdamW run diverged; nothing to compare with",
            details={"adamw_grid_final_val_loss": grid_note(table)},
        )
    grid = LR_GRID[ctx.scale]
    sai_lr, sai_table = tune_lr(
        ctx,
        "SGD-SaI",
        _charlm_spec(ctx.scale, "sgd_sai", momentum=0.9, weight_decay=0.01),
        grid,
        "val_loss",
        False,
        seed=ctx.seeds[0],
    )
    sgd_lr, sgd_table = tune_lr(
        ctx, "SGDM", _charlm_spec(ctx.scale, "sgd", momentum=0.9), grid, "val_loss", False, seed=ctx.seeds[0]
    )
    details = {
        "adamw_grid_final_val_loss (seed 0)": grid_note(table),
        "sgd_sai_grid_final_val_loss (seed 0)": grid_note(sai_table),
        "sgdm_grid_final_val_loss (seed 0)": grid_note(sgd_table),
    }
    if sai_lr is None:
        return ClaimOutcome(NOT_HELD, "every SGD-SaI run diverged", details=details)
    sai = run_method(
        ctx,
        f"SGD-SaI lr={sai_lr:g}",
        _charlm_spec(ctx.scale, "sgd_sai", lr=sai_lr, momentum=0.9, weight_decay=0.01),
    )
    series = [adamw.series("val_loss"), sai.series("val_loss")]
    sgd_final = math.nan
    if sgd_lr is not None:
        sgd = run_method(
            ctx, f"SGDM lr={sgd_lr:g}", _charlm_spec(ctx.scale, "sgd", lr=sgd_lr, momentum=0.9), seeds=ctx.seeds[:1]
        )
        series.append(sgd.series("val_loss"))
        sgd_final = sgd.mean_final("val_loss")
    adamw_loss, sai_loss = adamw.mean_final("val_loss"), sai.mean_final("val_loss")
    gap = sai_loss / adamw_loss - 1.0
    bytes_ratio = sai.state_bytes[0] / adamw.state_bytes[0]
    verdict = HELD if gap <= 0.02 and bytes_ratio <= 0.51 else NOT_HELD
    summary = (
        f"SGD-SaI final val loss {sai_loss:.4f} vs tuned AdamW {adamw_loss:.4f} ({gap:+.1%}; held if "
        f"<= +2%) with {bytes_ratio:.2f}x its state bytes (held if <= 0.51x); SGDM {sgd_final:.4f} (seed 0)"
    )
    edges = [name for name, t in (("AdamW", table), ("SGD-SaI", sai_table)) if "grid's edge" in grid_note(t)]
    if edges:
        summary += f"; best lr at the grid's edge for {' and '.join(edges)}"
    return ClaimOutcome(
        verdict,
        summary,
        metrics={
            "loss_gap_vs_adamw": gap,
            "state_bytes_ratio": bytes_ratio,
            "adamw_final_val_loss": adamw_loss,
            "sgd_sai_final_val_loss": sai_loss,
            "sgdm_final_val_loss": sgd_final,
            "adamw_state_bytes": adamw.state_bytes[0],
            "sgd_sai_state_bytes": sai.state_bytes[0],
            "adamw_lr": lr,
            "sgd_sai_lr": sai_lr,
            "sgdm_lr": sgd_lr if sgd_lr is not None else math.nan,
        },
        per_seed={
            "adamw_final_val_loss": adamw.finals("val_loss"),
            "sgd_sai_final_val_loss": sai.finals("val_loss"),
        },
        series=series,
        details=details,
        failures=adamw.failures + sai.failures,
    )


DIGITS_CNN = {
    "smoke": ({"batch_size": 32}, 30, 10),
    "quick": ({"batch_size": 64}, 600, 50),
    "full": ({"batch_size": 64}, 3000, 100),
}


def diffgrad_claim(ctx: ClaimContext) -> ClaimOutcome:
    config, steps, eval_every = DIGITS_CNN[ctx.scale]
    device = default_device(ctx.scale)
    adam = run_method(
        ctx,
        "Adam lr=1e-3",
        RunSpec.make("digits_cnn", config, "adam", {"lr": 1e-3}, steps, eval_every, device=device),
    )
    diff = run_method(
        ctx,
        "diffGrad lr=1e-3",
        RunSpec.make("digits_cnn", config, "diffgrad", {"lr": 1e-3}, steps, eval_every, device=device),
    )
    if not adam.ok or not diff.ok:
        return ClaimOutcome(INCONCLUSIVE, "runs diverged", failures=adam.failures + diff.failures)
    a, d = adam.mean_final("val_acc"), diff.mean_final("val_acc")
    verdict = HELD if d >= a else NOT_HELD
    summary = (
        f"diffGrad mean final val acc {d:.4f} vs Adam {a:.4f} ({d - a:+.4f}; held if >= 0) "
        f"after {steps} steps; val loss {diff.mean_final('val_loss'):.4f} vs {adam.mean_final('val_loss'):.4f}"
    )
    return ClaimOutcome(
        verdict,
        summary,
        metrics={
            "diffgrad_val_acc": d,
            "adam_val_acc": a,
            "acc_difference": d - a,
            "diffgrad_val_loss": diff.mean_final("val_loss"),
            "adam_val_loss": adam.mean_final("val_loss"),
        },
        per_seed={"adam_val_acc": adam.finals("val_acc"), "diffgrad_val_acc": diff.finals("val_acc")},
        series=[
            adam.series("val_acc"),
            diff.series("val_acc"),
            adam.series("val_loss"),
            diff.series("val_loss"),
        ],
        details={"workload": f"digits_cnn {config}, {steps} steps, both at the papers' default lr 1e-3"},
        failures=adam.failures + diff.failures,
    )


register(
    Claim(
        key="soap",
        paper="SOAP: Improving and Stabilizing Shampoo using Adam (arXiv 2409.11321)",
        field="optim",
        statement="In the large batch regime, SOAP reduces the number of iterations by over 40% and wall clock "
        "time by over 35% compared to AdamW",
        measures="steps SOAP (lr 3e-3, betas 0.95/0.95, preconditioner every 10 steps) needs to reach the final "
        "validation loss of AdamW (betas 0.9/0.95, lr tuned on a grid) on the stdlib char-LM, "
        "same warm-up + cosine schedule, as a fraction of AdamW's steps",
        threshold="median over seeds of the steps fraction <= 0.80",
        run=soap_claim,
    )
)
register(
    Claim(
        key="sgd_sai",
        paper="No More Adam: Learning Rate Scaling at Initialization is All You Need (arXiv 2412.11768)",
        field="optim",
        statement="SGD-SaI ... cuts the optimizer's memory usage by half compared to AdamW. Despite its simplicity "
        "and efficiency, SGD-SaI consistently matches or outperforms AdamW in training a variety of "
        "Transformer-based tasks",
        measures="final validation loss of SGD-SaI and of tuned AdamW (same lr grid for SGD-SaI, AdamW and SGD "
        "with momentum, SGDM on seed 0 only) on the stdlib char-LM, and their optimizer state bytes "
        "counted by state_bytes",
        threshold="SGD-SaI mean final val loss <= 1.02 x AdamW's, and state bytes <= 0.51 x AdamW's",
        run=sgd_sai_claim,
    )
)
register(
    Claim(
        key="diffgrad",
        paper="diffGrad: An Optimization Method for Convolutional Neural Networks (arXiv 1909.11015)",
        field="optim",
        statement="The experiments show that diffGrad outperforms other optimizers.",
        measures="final validation accuracy of diffGrad and Adam (both lr 1e-3) training the small CNN on "
        "scikit-learn's digits",
        threshold="diffGrad's mean final validation accuracy >= Adam's",
        run=diffgrad_claim,
    )
)
