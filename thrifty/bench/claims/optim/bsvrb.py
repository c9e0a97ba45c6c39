"""Claim of BSVRB (arXiv 2305.18730): its blockwise variance reduction tracks the hypergradient better than the same
method with plain moving averages, at equal samples, on a multi-block bilevel problem whose hypergradient is exact."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

import torch

from thrifty.bench.claim import INCONCLUSIVE, Claim, ClaimContext, ClaimOutcome, Series
from thrifty.bench.claims import register
from thrifty.bench.claims.optim.runs import tuning_seeds
from thrifty.bench.compare import compare
from thrifty.bench.experiment import tune
from thrifty.bench.workloads.bilevel import make_multiblock_ridge
from thrifty.optim.bsvrb import BSVRB

# steps, record every
BSVRB_SCALES = {"smoke": (20, 5), "quick": (400, 20), "full": (3000, 50)}
# m tasks of the multi-task ridge-weight problem, I sampled per step, B rows per mini-batch.
BSVRB_SETUP = {"num_blocks": 20, "blocks_per_step": 10, "batch_size": 8}
# The hyperparameters both variants share, tuned on the tuning seeds for the baseline (plain moving averages): the
# pair (step size of x and of the lower variables, lr = lr_y; moving-average weight, beta = beta_x) with its lowest
# hypergradient error. BSVRB then runs with the baseline's best setting, so its tuning cannot favour the method.
BSVRB_GRID = {
    "smoke": [(0.1, 0.05)],
    "quick": [(step, beta) for step in (0.03, 0.1, 0.3) for beta in (0.02, 0.05, 0.1, 0.2)],
    "full": [(step, beta) for step in (0.03, 0.1, 0.3) for beta in (0.01, 0.02, 0.05, 0.1, 0.2)],
}
# The larger step sizes sit near the edge of stability, which varies by seed: the grid is judged on three tuning
# seeds, and a setting that blows up on any of them is out.
TUNING_SEEDS = 3
ERROR_MARGIN = 0.10  # "verify the effectiveness" of the variance reduction: hypergradient error at least 10% lower


def _hparams(setting: tuple[float, float]) -> dict[str, float]:
    step, beta = setting
    return {"lr": step, "lr_y": step, "beta": beta, "beta_x": beta}


def _bsvrb_run(
    seed: int,
    steps: int,
    every: int,
    variance_reduction: bool,
    hparams: dict[str, float],
    advance: Callable[[int], None],
) -> tuple[list[float], list[float], list[float], list[float]]:
    """One run; returns (steps, seconds, relative estimation error |z - grad F(x)| / |grad F(x_0)|, |grad F(x)|
    relative to its start), recorded every ``every`` steps."""
    prob = make_multiblock_ridge(num_blocks=BSVRB_SETUP["num_blocks"], seed=seed)
    m = prob.num_blocks
    x = torch.zeros(prob.dim, dtype=torch.float64)
    ys = [torch.zeros(prob.dim, dtype=torch.float64) for _ in range(m)]
    gen = torch.Generator().manual_seed(seed)
    opt = BSVRB(
        x,
        ys,
        [prob.f(i) for i in range(m)],
        [prob.g(i) for i in range(m)],
        blocks_per_step=BSVRB_SETUP["blocks_per_step"],
        variance_reduction=variance_reduction,
        generator=gen,
        **hparams,
    )
    batch_for = prob.sampler(BSVRB_SETUP["batch_size"], gen)
    scale = float(prob.hypergradient(x).norm())
    at, seconds, errors, grads = [], [], [], []
    elapsed = 0.0
    for step in range(1, steps + 1):
        start = time.perf_counter()
        z = opt.step(batch_for)
        elapsed += time.perf_counter() - start
        advance(1)
        if step % every == 0:
            true = prob.hypergradient(x)
            at.append(step)
            seconds.append(elapsed)
            errors.append(float((z - true).norm()) / scale)
            grads.append(float(true.norm()) / scale)
    return at, seconds, errors, grads


def _late_error(errors: list[float]) -> float:
    """Mean error over the second half of the run; infinite when the estimate blew up."""
    late = errors[len(errors) // 2 :]
    return statistics.fmean(late) if all(math.isfinite(e) for e in late) else math.inf


def bsvrb_claim(ctx: ClaimContext) -> ClaimOutcome:
    steps, every = BSVRB_SCALES[ctx.scale]

    def evaluate(setting: tuple[float, float], seed: int) -> float:
        advance = ctx.track(f"no VR, lr {setting[0]:g}, beta {setting[1]:g} (tuning seed {seed})", steps)
        return _late_error(_bsvrb_run(seed, steps, every, False, _hparams(setting), advance)[2])

    tuning = tune(
        ctx,
        "shared (lr = lr_y, beta = beta_x), best for the no-VR baseline",
        BSVRB_GRID[ctx.scale],
        evaluate,
        "second-half relative hypergradient error",
        False,
        seeds=tuning_seeds(ctx, TUNING_SEEDS),
    )
    grid_text = ", ".join(f"{k}: {v:.4f}" for k, v in tuning.table.items())
    if tuning.chosen is None:
        return ClaimOutcome(
            INCONCLUSIVE,
            "every no-VR tuning run blew up; nothing to compare with",
            details={"grid": grid_text},
            tuning=[tuning.to_dict()],
        )
    hparams = _hparams(tuning.chosen)
    labels = {True: "BSVRB (MSVR + STORM)", False: "moving averages (no VR)"}
    series = {vr: Series(label=labels[vr], metric="hypergradient_error") for vr in labels}
    error: dict[bool, list[float]] = {True: [], False: []}
    final_grad: dict[bool, list[float]] = {True: [], False: []}
    for vr in (True, False):
        advance = ctx.track(labels[vr], steps * len(ctx.seeds))
        for seed in ctx.seeds:
            at, seconds, errors, grads = _bsvrb_run(seed, steps, every, vr, hparams, advance)
            series[vr].add(at, seconds, errors)
            error[vr].append(_late_error(errors))
            final_grad[vr].append(grads[-1])
    judged = compare(
        "second-half relative hypergradient error, BSVRB vs no VR, relative",
        error[True],
        error[False],
        better="lower",
        margin=ERROR_MARGIN,
        relative=True,
    )
    grad = compare(
        "final |grad F(x)| (relative to its start), BSVRB vs no VR, relative",
        final_grad[True],
        final_grad[False],
        better="lower",
        margin=0.0,
        relative=True,
    )
    summary = f"{steps} steps at lr = lr_y = {hparams['lr']:g}, beta = beta_x = {hparams['beta']:g}"
    edges = [
        name
        for name, axis, value in (("step size", 0, hparams["lr"]), ("beta", 1, hparams["beta"]))
        if len({s[axis] for s in BSVRB_GRID[ctx.scale]}) > 1
        and value in (min(s[axis] for s in BSVRB_GRID[ctx.scale]), max(s[axis] for s in BSVRB_GRID[ctx.scale]))
    ]
    if edges:
        summary += f" ({' and '.join(edges)} at the grid's edge)"
    return ClaimOutcome.judged(
        summary,
        [judged],
        reported=[grad],
        metrics={
            "bsvrb_hypergrad_error": judged.method_mean,
            "no_vr_hypergrad_error": judged.baseline_mean,
            "relative_error_change": judged.effect,
            "bsvrb_final_grad_norm_rel": statistics.fmean(final_grad[True]),
            "no_vr_final_grad_norm_rel": statistics.fmean(final_grad[False]),
        },
        per_seed={
            "bsvrb_hypergrad_error": error[True],
            "no_vr_hypergrad_error": error[False],
            "bsvrb_final_grad_norm_rel": final_grad[True],
            "no_vr_final_grad_norm_rel": final_grad[False],
        },
        series=[series[True], series[False]],
        details={
            "workload": f"multi-task ridge-weight learning (thrifty.bench.workloads.bilevel), {BSVRB_SETUP}, "
            "10 features, 50 training and 50 validation rows per task; x = per-feature log ridge weights",
            "hyperparameters": f"{hparams} for both, tuned for the no-VR baseline on tuning seeds {tuning.seeds}; "
            "gamma = (m - I)/(I (1 - beta)) + (1 - beta) for BSVRB, 0 without VR; the same samples (blocks and "
            "rows) for both",
            "grid (lr, beta): no-VR error": grid_text,
            "metric": "|z_t - grad F(x_t)| / |grad F(x_0)| with the closed-form hypergradient, averaged over the "
            "second half of the run; the final |grad F(x_T)| is reported, not judged",
            "scale": "measured, CPU",
        },
        tuning=[tuning.to_dict()],
    )


register(
    Claim(
        key="bsvrb",
        statement="we propose two stochastic algorithms by using advanced blockwise variance-reduction techniques "
        "for tracking the Hessian matrices (for low-dimensional problems) or the Hessian-vector products (for "
        "high-dimensional problems) ... We also conduct experiments to verify the effectiveness of the proposed "
        "algorithms",
        measures="error of the hypergradient estimate against the closed-form grad F on a 20-block bilevel problem "
        "with quadratic lower levels (I = 10 blocks and 8 rows per block per step), averaged over the second half "
        "of the run: BSVRB v2 vs the same method with plain moving averages, paired by seed, same samples and the "
        "same hyperparameters (step sizes and averaging weight tuned for the no-VR baseline on three tuning seeds)",
        threshold=f"relative error change of BSVRB over no VR: 90% t-interval below -{ERROR_MARGIN:.0%}",
        run=bsvrb_claim,
        default=True,
    )
)
