"""FRUGAL's claim: full-rank updates from gradient splitting beat a low-rank method at equal state memory, and
match AdamW."""

from __future__ import annotations

from thrifty.bench.claim import INCONCLUSIVE, Claim, ClaimContext, ClaimOutcome
from thrifty.bench.claims import register
from thrifty.bench.compare import compare
from thrifty.bench.experiment import run_method
from thrifty.bench.specs import ADAMW, CHARLM, charlm_spec

# The paper's pre-training learning rate (official scripts: lr 1e-3 for AdamW and FRUGAL alike), and its state-full
# density rho = 0.25 (the paper's main budget); neither is tuned here.
LR = 1e-3
DENSITY = 0.25
# The paper refreshes the subspace every 200 steps in runs of 10k (60M) to 20k (130M) steps, about
# 50 to 100 refreshes per run; a run of `steps` steps here refreshes every steps // 50.
REFRESHES = 50
ADAMW_MARGIN = 0.02  # "balancing memory efficiency and performance": final val loss at most 2% above AdamW's
LOWRANK_MARGIN = 0.02  # "outperforms concurrent approaches" at a fixed memory budget: at least 2% below GaLore-style


def _update_gap(steps: int) -> int:
    return max(1, steps // REFRESHES)


def _ratio(a: int, b: int) -> str:
    """``a / b`` as ``"0.30x"`` (``"n/a"`` when ``b`` holds no state, as an optimizer that stores nothing)."""
    return f"{a / b:.2f}x" if b else "n/a"


def frugal_claim(ctx: ClaimContext) -> ClaimOutcome:
    steps = CHARLM[ctx.scale][1]
    gap = _update_gap(steps)
    split = {"density": DENSITY, "update_gap": gap, "proj_type": "svd"}
    adamw = run_method(ctx, f"AdamW lr={LR:g}", charlm_spec(ctx.scale, "adamw", lr=LR, **ADAMW))
    frugal = run_method(
        ctx,
        f"FRUGAL rho={DENSITY:g} (SVD, signSGD)",
        charlm_spec(ctx.scale, "frugal", lr=LR, inactive_update_rule="sign_sgd", **split, **ADAMW),
    )
    galore = run_method(
        ctx,
        f"GaLore-style rho={DENSITY:g} (SVD, no state-free update)",
        charlm_spec(ctx.scale, "frugal", lr=LR, inactive_update_rule="no", **split, **ADAMW),
    )
    failures = adamw.failures + frugal.failures + galore.failures
    series = [r.series("val_loss") for r in (adamw, frugal, galore)]
    if not adamw.ok or not galore.ok:
        return ClaimOutcome(
            INCONCLUSIVE, "every AdamW or every GaLore-style run diverged", series=series, failures=failures
        )
    vs_adamw = compare(
        "FRUGAL final val loss vs AdamW's, relative",
        frugal.finals("val_loss"),
        adamw.finals("val_loss"),
        better="lower",
        margin=ADAMW_MARGIN,
        kind="noninferior",
        relative=True,
    )
    vs_lowrank = compare(
        "FRUGAL final val loss vs the GaLore-style variant's (same subspace and state), relative",
        frugal.finals("val_loss"),
        galore.finals("val_loss"),
        better="lower",
        margin=LOWRANK_MARGIN,
        relative=True,
    )
    a_bytes, f_bytes, g_bytes = adamw.state_bytes[0], frugal.state_bytes[0], galore.state_bytes[0]
    # The state bytes follow from the configuration (same subspace, a state-free residual), so they are reported:
    # the equal budget of the two split variants, and FRUGAL's budget against AdamW's (counted, seed-independent).
    budget = compare(
        "FRUGAL state bytes vs the GaLore-style variant's (counted): the same budget within 1%",
        [f_bytes],
        g_bytes,
        better="lower",
        margin=0.01,
        kind="equivalent",
        relative=True,
        exact=True,
    )
    memory = compare(
        "FRUGAL state bytes vs AdamW's (counted)",
        [f_bytes],
        a_bytes,
        better="lower",
        margin=0.0,
        relative=True,
        exact=True,
    )
    return ClaimOutcome.judged(
        f"FRUGAL, its GaLore-style variant and AdamW, all at lr {LR:g}; FRUGAL's state is {_ratio(f_bytes, a_bytes)} "
        f"AdamW's and {_ratio(f_bytes, g_bytes)} the GaLore-style variant's; update gap {gap} of {steps} steps",
        [vs_adamw, vs_lowrank],
        reported=[budget, memory],
        metrics={
            "frugal_vs_adamw_relative_loss_change": vs_adamw.effect,
            "frugal_vs_galore_relative_loss_change": vs_lowrank.effect,
            "adamw_final_val_loss": adamw.mean_final("val_loss"),
            "frugal_final_val_loss": frugal.mean_final("val_loss"),
            "galore_final_val_loss": galore.mean_final("val_loss"),
            "adamw_state_bytes": a_bytes,
            "frugal_state_bytes": f_bytes,
            "galore_state_bytes": g_bytes,
            "update_gap": gap,
        },
        per_seed={
            "adamw_final_val_loss": adamw.finals("val_loss"),
            "frugal_final_val_loss": frugal.finals("val_loss"),
            "galore_final_val_loss": galore.finals("val_loss"),
        },
        series=series,
        details={
            "workload": f"charlm {dict(adamw.spec.config)}, {steps} steps, warm-up + cosine schedule",
            "hyperparameters": f"lr {LR:g} (the official scripts' pre-training lr), density {DENSITY:g}, betas "
            f"{ADAMW['betas']}, weight decay {ADAMW['weight_decay']}, for all three; not tuned",
            "projected tensors": "every 2-D tensor (create_optimizer's groups carry no names): the Linear "
            "weights, and also the two embeddings and the output head, which the paper keeps on AdamW",
        },
        failures=failures,
    )


register(
    Claim(
        key="frugal",
        statement="our method consistently outperforms concurrent approaches across various fixed memory "
        "budgets, achieving state-of-the-art results in pre-training and fine-tuning tasks while balancing "
        "memory efficiency and performance metrics",
        measures="final validation loss on the stdlib char-LM of AdamW, FRUGAL (rho 0.25, SVD subspace, signSGD "
        "on the residual) and its GaLore-style variant (same subspace and state bytes, no state-free update), all "
        "at the official lr 1e-3, betas (0.9, 0.95), weight decay 0.01, warm-up + cosine, paired by seed; subspace "
        "refreshed (moments reset) 50 times per run; optimizer state bytes counted by state_bytes (reported)",
        threshold=f"relative val-loss change of FRUGAL: over AdamW, 90% t-interval below +{ADAMW_MARGIN:.0%} "
        f"(non-inferior); over the GaLore-style variant, 90% t-interval below -{LOWRANK_MARGIN:.0%}",
        run=frugal_claim,
        default=False,
    )
)
