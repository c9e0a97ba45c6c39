"""The 8-bit optimizers' claim: block-wise dynamic 8-bit AdamW trains as well as 32-bit AdamW."""

from __future__ import annotations

import math

from thrifty.bench.claim import HELD, INCONCLUSIVE, NOT_HELD, Claim, ClaimContext, ClaimOutcome
from thrifty.bench.claims import register
from thrifty.bench.experiment import run_method
from thrifty.bench.specs import ADAMW, CHARLM, charlm_spec

LR = 1e-3  # the same hyperparameters for both: the paper's point is "without changing hyperparameters"
TOLERANCE = 0.01  # 8-bit final validation loss at most 1% above fp32 AdamW's
# The paper's ablation: tensor-wise (one absmax per tensor) linear 8-bit states, on the first seed only
# (it is reported, not judged, and one run shows the degradation at a third of the cost).
TENSORWISE_LINEAR = {"quant_map": "linear", "block_size": None}


def adamw8bit_claim(ctx: ClaimContext) -> ClaimOutcome:
    steps = CHARLM[ctx.scale][1]
    adamw = run_method(ctx, f"AdamW lr={LR:g}", charlm_spec(ctx.scale, "adamw", lr=LR, **ADAMW))
    eight = run_method(ctx, "AdamW8bit (block-wise dynamic)", charlm_spec(ctx.scale, "adamw8bit", lr=LR, **ADAMW))
    linear = run_method(
        ctx,
        "AdamW8bit (tensor-wise linear, ablation)",
        charlm_spec(ctx.scale, "adamw8bit", lr=LR, **TENSORWISE_LINEAR, **ADAMW),
        seeds=ctx.seeds[:1],
    )
    failures = adamw.failures + eight.failures + linear.failures
    series = [r.series("val_loss") for r in (adamw, eight, linear)]
    if not adamw.ok:
        return ClaimOutcome(
            INCONCLUSIVE, "every AdamW run diverged; nothing to compare with", series=series, failures=failures
        )
    a, e, lin = (r.mean_final("val_loss") for r in (adamw, eight, linear))
    gap, lin_gap = e / a - 1.0, lin / a - 1.0
    bytes_ratio = eight.state_bytes[0] / adamw.state_bytes[0]
    verdict = HELD if math.isfinite(e) and gap <= TOLERANCE else NOT_HELD
    lin_text = (
        f"{lin:.4f} ({lin_gap:+.2%}, seed {linear.seeds[0]})" if math.isfinite(lin) else "diverged (non-finite loss)"
    )
    summary = (
        f"AdamW8bit final val loss {e:.4f} vs fp32 AdamW {a:.4f} ({gap:+.2%}; held if <= +{TOLERANCE:.0%}) "
        f"at {bytes_ratio:.3f}x its state bytes; tensor-wise linear 8-bit ablation {lin_text}"
    )
    return ClaimOutcome(
        verdict,
        summary,
        metrics={
            "loss_gap_vs_adamw": gap,
            "tensorwise_linear_loss_gap_vs_adamw": lin_gap,
            "adamw_final_val_loss": a,
            "adamw8bit_final_val_loss": e,
            "tensorwise_linear_final_val_loss": lin,
            "state_bytes_ratio": bytes_ratio,
            "adamw_state_bytes": adamw.state_bytes[0],
            "adamw8bit_state_bytes": eight.state_bytes[0],
        },
        per_seed={
            "adamw_final_val_loss": adamw.finals("val_loss"),
            "adamw8bit_final_val_loss": eight.finals("val_loss"),
            "tensorwise_linear_final_val_loss": linear.finals("val_loss"),
        },
        series=series,
        details={
            "workload": f"charlm {dict(adamw.spec.config)}, {steps} steps, warm-up + cosine schedule",
            "hyperparameters": f"lr {LR:g}, betas {ADAMW['betas']}, weight decay {ADAMW['weight_decay']} "
            "(not on biases and norms) for all three; 8-bit: block size 256, dynamic maps, tensors under "
            "4096 elements in 32 bit (as bitsandbytes)",
            "ablation": "same optimizer with quant_map='linear', block_size=None (one absmax per tensor), "
            "first seed only; reported, not part of the verdict",
        },
        failures=failures,
    )


register(
    Claim(
        key="adamw8bit",
        statement="our 8-bit optimizers maintain 32-bit performance with a small fraction of the memory footprint "
        "on a range of tasks ... without changes to the original optimizer hyperparameters",
        measures="final validation loss of AdamW8bit (block-wise dynamic 8-bit states) and fp32 AdamW with the "
        "same hyperparameters (lr 1e-3, betas 0.9/0.95, weight decay 0.01, warm-up + cosine) on the stdlib "
        "char-LM, mean over seeds, and their state bytes; an ablation with tensor-wise linear 8-bit states "
        "(first seed)",
        threshold=f"AdamW8bit mean final val loss <= {1 + TOLERANCE:g} x AdamW's",
        run=adamw8bit_claim,
        default=False,
    )
)
