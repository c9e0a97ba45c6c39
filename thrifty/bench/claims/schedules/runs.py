"""Workloads, learning-rate grids and tuned AdamW runs that several schedule claims share.

The schedule claims train AdamW (betas 0.9/0.95, weight decay 0.01) on the char-LM (``thrifty.bench.specs``) and
on the digits MLP and CNN with a schedule after a 5% linear warm-up; each peak learning rate is tuned on the
tuning seeds only (``tune_lr``) and the judged seeds then run at it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from thrifty.bench.claim import ClaimContext
from thrifty.bench.experiment import RunSpec, Tuning, default_device, tune_lr
from thrifty.bench.specs import ADAMW, LR_GRID, charlm_spec

__all__ = ["DIGITS", "DIGITS_ADAMW_GRID", "adamw_spec", "lr_grid", "tuned_peak_lr", "with_lr"]

DIGITS: dict[str, tuple[dict[str, Any], int, int]] = {
    "smoke": ({"batch_size": 32}, 30, 10),
    "quick": ({"batch_size": 64}, 500, 50),
    "full": ({"batch_size": 64}, 3000, 100),
}
DIGITS_ADAMW_GRID = {"smoke": [3e-3], "quick": [3e-3, 1e-2, 3e-2, 1e-1], "full": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]}


def adamw_spec(workload: str, scale: str, schedule: str | tuple[float, ...]) -> RunSpec:
    """AdamW (betas 0.9/0.95, weight decay 0.01, no lr yet) on ``workload`` (``charlm``, ``digits_mlp`` or
    ``digits_cnn``) at ``scale`` with ``schedule``; the char-LM's settings are the shared ones of ``specs``."""
    if workload == "charlm":
        return dataclasses.replace(charlm_spec(scale, "adamw", **ADAMW), schedule=schedule)
    config, steps, eval_every = DIGITS[scale]
    return RunSpec.make(workload, config, "adamw", ADAMW, steps, eval_every, schedule, default_device(scale))


def lr_grid(workload: str, scale: str) -> list[float]:
    """The peak learning rates tried for AdamW on ``workload``."""
    return LR_GRID[scale] if workload == "charlm" else DIGITS_ADAMW_GRID[scale]


def with_lr(spec: RunSpec, lr: float) -> RunSpec:
    """``spec`` with its learning rate set to ``lr``."""
    return dataclasses.replace(spec, opt_kwargs=tuple(sorted((dict(spec.opt_kwargs) | {"lr": lr}).items())))


def tuned_peak_lr(ctx: ClaimContext, workload: str, schedule: str) -> Tuning:
    """AdamW's peak learning rate on ``workload`` with ``schedule``, tuned for final validation loss on the
    tuning seeds (``chosen`` is ``None`` when every tuning run diverged)."""
    spec = adamw_spec(workload, ctx.scale, schedule)
    return tune_lr(ctx, f"{workload} AdamW {schedule}", spec, lr_grid(workload, ctx.scale), "val_loss", False)
