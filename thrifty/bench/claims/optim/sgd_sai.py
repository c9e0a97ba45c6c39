"""SGD-SaI against tuned AdamW on the char-LM: final validation loss and optimizer state bytes."""

from __future__ import annotations

from thrifty.bench.claim import INCONCLUSIVE, Claim, ClaimContext, ClaimOutcome
from thrifty.bench.claims import register
from thrifty.bench.compare import compare
from thrifty.bench.experiment import run_method, tune_lr
from thrifty.bench.specs import LR_GRID, charlm_spec, tuned_adamw_charlm

LOSS_MARGIN = 0.02  # "matches or outperforms": final val loss at most 2% above AdamW's
BYTES_MARGIN = 0.01  # "cuts the optimizer's memory usage by half": state bytes at most 0.51x AdamW's


def sgd_sai_claim(ctx: ClaimContext) -> ClaimOutcome:
    adamw_tuning, adamw = tuned_adamw_charlm(ctx)
    if adamw is None or not adamw.ok:
        return ClaimOutcome(
            INCONCLUSIVE,
            "every AdamW run diverged; nothing to compare with",
            details={"adamw grid": adamw_tuning.note()},
            tuning=[adamw_tuning.to_dict()],
        )
    grid = LR_GRID[ctx.scale]
    sai_tuning = tune_lr(
        ctx, "SGD-SaI", charlm_spec(ctx.scale, "sgd_sai", momentum=0.9, weight_decay=0.01), grid, "val_loss", False
    )
    sgd_tuning = tune_lr(ctx, "SGDM", charlm_spec(ctx.scale, "sgd", momentum=0.9), grid, "val_loss", False)
    tuning = [t.to_dict() for t in (adamw_tuning, sai_tuning, sgd_tuning)]
    details = {f"{t.label} grid": t.note() for t in (adamw_tuning, sai_tuning, sgd_tuning)}
    if sai_tuning.chosen is None:
        return ClaimOutcome(INCONCLUSIVE, "every SGD-SaI tuning run diverged", details=details, tuning=tuning)
    sai_lr = sai_tuning.chosen
    sai = run_method(
        ctx, f"SGD-SaI lr={sai_lr:g}", charlm_spec(ctx.scale, "sgd_sai", lr=sai_lr, momentum=0.9, weight_decay=0.01)
    )
    series = [adamw.series("val_loss"), sai.series("val_loss")]
    reported = []
    if sgd_tuning.chosen is not None:
        sgd_lr = sgd_tuning.chosen
        sgd = run_method(ctx, f"SGDM lr={sgd_lr:g}", charlm_spec(ctx.scale, "sgd", lr=sgd_lr, momentum=0.9))
        series.append(sgd.series("val_loss"))
        reported.append(
            compare(
                "SGD-SaI final val loss vs SGDM's, relative",
                sai.finals("val_loss"),
                sgd.finals("val_loss"),
                better="lower",
                margin=0.0,
                relative=True,
            )
        )
    loss = compare(
        "final val loss vs AdamW's, relative",
        sai.finals("val_loss"),
        adamw.finals("val_loss"),
        better="lower",
        margin=LOSS_MARGIN,
        kind="noninferior",
        relative=True,
    )
    bytes_ratio = sai.state_bytes[0] / adamw.state_bytes[0]
    state = compare(
        "state bytes / AdamW's (counted, seed-independent)",
        [bytes_ratio],
        0.5,
        better="lower",
        margin=BYTES_MARGIN,
        kind="noninferior",
        exact=True,
    )
    edges = [t.label for t in (adamw_tuning, sai_tuning) if "grid's edge" in t.note()]
    summary = f"SGD-SaI (lr {sai_lr:g}) vs AdamW (lr {adamw_tuning.chosen:g}), state {bytes_ratio:.2f}x AdamW's"
    if edges:
        summary += f"; best lr at the grid's edge for {' and '.join(edges)}"
    return ClaimOutcome.judged(
        summary,
        [loss, state],
        reported=reported,
        metrics={
            "loss_gap_vs_adamw": loss.effect,
            "state_bytes_ratio": bytes_ratio,
            "adamw_final_val_loss": adamw.mean_final("val_loss"),
            "sgd_sai_final_val_loss": sai.mean_final("val_loss"),
            "adamw_state_bytes": adamw.state_bytes[0],
            "sgd_sai_state_bytes": sai.state_bytes[0],
            "adamw_lr": adamw_tuning.chosen,
            "sgd_sai_lr": sai_lr,
        },
        per_seed={
            "adamw_final_val_loss": adamw.finals("val_loss"),
            "sgd_sai_final_val_loss": sai.finals("val_loss"),
        },
        series=series,
        details=details,
        tuning=tuning,
        failures=adamw.failures + sai.failures,
    )


register(
    Claim(
        key="sgd_sai",
        statement="SGD-SaI ... cuts the optimizer's memory usage by half compared to AdamW. Despite its simplicity "
        "and efficiency, SGD-SaI consistently matches or outperforms AdamW in training a variety of "
        "Transformer-based tasks",
        measures="final validation loss of SGD-SaI and of AdamW on the stdlib char-LM, each with its learning rate "
        "tuned on the same grid on tuning seeds (SGD with momentum alongside, reported), and their optimizer state "
        "bytes counted by state_bytes",
        threshold=f"relative val-loss gap to AdamW: 90% t-interval below +{LOSS_MARGIN:.0%} (non-inferior); state "
        f"bytes <= {0.5 + BYTES_MARGIN:.2f}x AdamW's",
        run=sgd_sai_claim,
    )
)
