"""Workload settings that several claims share, in one public place (claims import these, never each other).

Each entry maps a scale to (workload config, steps, evaluation interval); the learning-rate grids are the ones
claims tune on (on tuning seeds only, ``thrifty.bench.experiment.tune_lr``).
"""

from __future__ import annotations

from typing import Any

from thrifty.bench.claim import ClaimContext
from thrifty.bench.experiment import MethodRuns, RunSpec, Tuning, default_device, run_method, tune_lr

__all__ = ["ADAMW", "CHARLM", "LR_GRID", "charlm_spec", "tuned_adamw_charlm"]

CHARLM: dict[str, tuple[dict[str, Any], int, int]] = {
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


def charlm_spec(scale: str, optimizer: str, **opt_kwargs: Any) -> RunSpec:
    """The stdlib char-LM at ``scale`` with a warm-up + cosine schedule."""
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


def tuned_adamw_charlm(ctx: ClaimContext) -> tuple[Tuning, MethodRuns | None]:
    """AdamW (betas 0.9/0.95) on the char-LM, its learning rate tuned on ``LR_GRID`` over the tuning seeds, then
    run on every judged seed (``None`` when every tuning run diverged). The SOAP and SGD-SaI claims share it."""
    tuning = tune_lr(ctx, "AdamW", charlm_spec(ctx.scale, "adamw", **ADAMW), LR_GRID[ctx.scale], "val_loss", False)
    if tuning.chosen is None:
        return tuning, None
    lr = tuning.chosen
    return tuning, run_method(ctx, f"AdamW lr={lr:g}", charlm_spec(ctx.scale, "adamw", lr=lr, **ADAMW))
