"""Claims of SSO (target-based surrogates) and AGVM (per-module learning-rate modulation at large batch)."""

from __future__ import annotations

import math
import statistics
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thrifty.bench.claim import HELD, INCONCLUSIVE, NOT_HELD, Claim, ClaimContext, ClaimOutcome, Series
from thrifty.bench.claims import register
from thrifty.bench.experiment import grid_note
from thrifty.bench.workloads import make_task
from thrifty.bench.workloads.digits import build_seeded
from thrifty.data.digits import NUM_CLASSES, load_digits_split
from thrifty.optim.agvm import AGVM, module_param_groups
from thrifty.optim.sso import SSO


@dataclass
class _Run:
    """One training run: an x axis (output-gradient evaluations or steps), seconds and a loss per point."""

    steps: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    failure: str | None = None

    @property
    def final(self) -> float:
        return self.values[-1] if self.failure is None else math.nan


def _series(label: str, metric: str, runs: list[_Run]) -> Series:
    s = Series(label=label, metric=metric)
    for r in runs:
        if r.failure is None:
            s.add(r.steps, r.seconds, r.values)
    return s


# ---------------------------------------------------------------------------------------------- SSO

SSO_SCALES = {"smoke": (12, 4), "quick": (240, 24), "full": (2400, 120)}  # output-gradient evaluations, eval every
# Half-decade grids of the same size for SGD's learning rate and SSO's inverse step size eta (the official
# configs grid-search both, over decades); each is tuned on the first seed.
SSO_SGD_GRID = {
    "smoke": [1.0],
    "quick": [0.1, 0.3, 1.0, 3.0, 10.0, 30.0],
    "full": [0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0],
}
SSO_ETA_GRID = {
    "smoke": [0.1],
    "quick": [1.0, 0.3, 0.1, 0.03, 0.01, 0.003],
    "full": [1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001],
}
SSO_BATCH = 125
SSO_INNER_STEPS = (1, 10)


def _logreg_run(
    seed: int, steps: int, eval_every: int, advance: Callable[[int], None], rate: float, inner_steps: int = 0
) -> _Run:
    """SGD with learning rate ``rate`` (``inner_steps == 0``), or SSO with ``inner_steps`` and ``eta = rate``, on
    the digits logistic regression.

    The x axis counts output-gradient evaluations: one per SGD step and one per SSO outer step. The
    loss is the mean cross-entropy on the whole training split.
    """
    task = make_task("logreg", seed=seed, batch_size=SSO_BATCH)
    model = task.model
    x_train, y_train, _, _ = load_digits_split()
    if inner_steps:
        # The official LSOpt grows the trial step by expand_coeff (2) per epoch: 2 ** (1 / batches per epoch).
        expand = 2.0 ** (SSO_BATCH / len(x_train))
        opt: torch.optim.Optimizer = SSO(model.parameters(), eta=rate, inner_steps=inner_steps, expand=expand)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=rate)

    def train_loss() -> float:
        with torch.no_grad():
            return float(F.cross_entropy(model(x_train), y_train))

    run = _Run([0], [0.0], [train_loss()])
    elapsed = 0.0
    for step in range(1, steps + 1):
        x, y = task.next_batch()
        start = time.perf_counter()
        if inner_steps:
            loss = opt.step(lambda x=x: model(x), lambda z, y=y: F.cross_entropy(z, y, reduction="sum"))
        else:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            loss = loss.detach()
        elapsed += time.perf_counter() - start
        advance(1)
        if not math.isfinite(float(loss)):
            advance(steps - step)
            run.failure = f"seed {seed}: loss became non-finite at step {step}"
            return run
        if step % eval_every == 0 or step == steps:
            run.steps.append(step)
            run.seconds.append(elapsed)
            run.values.append(train_loss())
    return run


def _tune(ctx: ClaimContext, label: str, grid: list[float], steps: int, eval_every: int, inner_steps: int = 0):
    """The grid value with the lowest final training loss on the first seed, and the table (NaN for diverged)."""
    table = {}
    for value in grid:
        advance = ctx.track(f"{label}={value:g} (seed {ctx.seeds[0]})", steps)
        table[value] = _logreg_run(ctx.seeds[0], steps, eval_every, advance, value, inner_steps).final
    finite = {v: loss for v, loss in table.items() if math.isfinite(loss)}
    return (min(finite, key=finite.__getitem__) if finite else None), table


def sso_claim(ctx: ClaimContext) -> ClaimOutcome:
    steps, eval_every = SSO_SCALES[ctx.scale]
    sgd_lr, sgd_table = _tune(ctx, "SGD lr", SSO_SGD_GRID[ctx.scale], steps, eval_every)
    if sgd_lr is None:
        return ClaimOutcome(INCONCLUSIVE, "every SGD run diverged", details={"sgd_grid": grid_note(sgd_table)})
    advance = ctx.track(f"SGD lr={sgd_lr:g}", steps * len(ctx.seeds))
    sgd = [_logreg_run(seed, steps, eval_every, advance, sgd_lr) for seed in ctx.seeds]
    sso, etas, eta_tables = {}, {}, {}
    for m in SSO_INNER_STEPS:
        etas[m], eta_tables[m] = _tune(ctx, f"SSO m={m} eta", SSO_ETA_GRID[ctx.scale], steps, eval_every, m)
        if etas[m] is None:
            sso[m] = []
            continue
        advance = ctx.track(f"SSO m={m} eta={etas[m]:g}", steps * len(ctx.seeds))
        sso[m] = [_logreg_run(seed, steps, eval_every, advance, etas[m], m) for seed in ctx.seeds]
    sgd_loss = statistics.fmean(r.final for r in sgd)
    sso_loss = {m: statistics.fmean(r.final for r in runs) if runs else math.nan for m, runs in sso.items()}
    held = all(sso_loss[m] < sgd_loss for m in SSO_INNER_STEPS)
    verdict = HELD if held else NOT_HELD
    parts = ", ".join(f"SSO m={m} {sso_loss[m]:.4f}" for m in SSO_INNER_STEPS)
    summary = (
        f"after {steps} output-gradient evaluations, mean final training loss {parts} vs SGD {sgd_loss:.4f} "
        f"(lr {sgd_lr:g}; lr and eta tuned on grids; held if every m is below SGD)"
    )
    edges = [
        name
        for name, table in [("SGD", sgd_table)] + [(f"SSO m={m}", t) for m, t in eta_tables.items()]
        if "grid's edge" in grid_note(table)
    ]
    if edges:
        summary += f"; best value at the grid's edge for {' and '.join(edges)}"
    failures = [
        f"{label}: {r.failure}"
        for label, runs in [("SGD", sgd)] + [(f"SSO m={m}", v) for m, v in sso.items()]
        for r in runs
        if r.failure
    ]
    return ClaimOutcome(
        verdict,
        summary,
        metrics={
            "sgd_final_train_loss": sgd_loss,
            **{f"sso_m{m}_final_train_loss": sso_loss[m] for m in SSO_INNER_STEPS},
            **{f"sso_m{m}_loss_ratio_vs_sgd": sso_loss[m] / sgd_loss for m in SSO_INNER_STEPS},
            "sgd_lr": sgd_lr,
            **{f"sso_m{m}_eta": etas[m] if etas[m] is not None else math.nan for m in SSO_INNER_STEPS},
            "output_grad_evals": steps,
        },
        per_seed={
            "sgd_final_train_loss": [r.final for r in sgd],
            **{f"sso_m{m}_final_train_loss": [r.final for r in runs] for m, runs in sso.items()},
        },
        series=[_series(f"SGD lr={sgd_lr:g}", "train_loss", sgd)]
        + [_series(f"SSO m={m} eta={etas[m]:g}", "train_loss", runs) for m, runs in sso.items() if runs],
        details={
            "sgd_grid_final_train_loss (seed 0)": grid_note(sgd_table),
            **{f"sso_m{m}_eta_grid_final_train_loss (seed 0)": grid_note(t) for m, t in eta_tables.items()},
            "workload": f"logreg on the digits (nn.Linear(64, 10)), batch {SSO_BATCH}; x axis = output-gradient "
            "evaluations (SGD steps, SSO outer steps); loss = cross-entropy on the whole training split",
            "sso": "Armijo line search (trial step reset to 10 each outer step, c 0.1, beta 0.9, expand "
            "2 ** (batch / n) as the official code's per-epoch 2), surrogate on the summed batch loss as in the "
            "official code",
        },
        failures=failures,
    )


register(
    Claim(
        key="sso",
        statement="This allows for multiple parameter updates to the model, amortizing the cost of gradient "
        "computation. ... Our experiments indicate the benefits of target optimization and the effectiveness "
        "of SSO.",
        measures="training loss of multiclass logistic regression on the digits after the same number of "
        "output-gradient evaluations, for SSO with m = 1 and m = 10 inner steps (Armijo line search) and for "
        "SGD; SGD's lr and SSO's eta (per m) tuned on half-decade grids of the same size on seed 0",
        threshold="for each m in {1, 10}, SSO's mean final training loss < tuned SGD's",
        run=sso_claim,
        default=True,
    )
)


# --------------------------------------------------------------------------------------------- AGVM

# steps, warm-up steps (AGVM starts after them, as the official hook recommends), eval every
AGVM_SCALES = {"smoke": (8, 2, 4), "quick": (150, 15, 15), "full": (600, 60, 30)}
# Grids with a ratio of sqrt(2) between neighbours: AGVM lowers a module's lr by at most sqrt(0.5), so a coarser grid
# would step over the range of learning rates where it can make a difference.
AGVM_LR_GRID = {
    "smoke": [0.01, 1.0],
    "quick": [0.01 * 2 ** (k / 2) for k in range(5)],
    "full": [0.005 * 2 ** (k / 2) for k in range(9)],
}
AGVM_BATCH = 1024
AGVM_HEAD_WEIGHT = 10.0
# A run "degrades" when its final loss exceeds 1.5x the best final loss of plain SGD on the grid (or it diverges).
AGVM_DEGRADED = 1.5


def _two_module_digits() -> nn.Module:
    return nn.Sequential(
        OrderedDict(
            backbone=nn.Sequential(
                nn.Unflatten(1, (1, 8, 8)),
                nn.Conv2d(1, 16, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(16, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
            ),
            head=nn.Sequential(nn.Linear(32 * 16, 64), nn.ReLU(), nn.Linear(64, NUM_CLASSES)),
        )
    )


def _digits_two_module_run(
    seed: int, scale: str, lr: float, use_agvm: bool, advance: Callable[[int], None]
) -> tuple[_Run, list[float]]:
    """Conv backbone + MLP head on the digits, loss 10 x cross-entropy, batches of 1024, SGD with momentum 0.9.

    Linear warm-up, then a constant ``lr``; with ``use_agvm`` the two modules' learning rates are modulated
    by AGVM (halves = the two halves of each batch, updated every step after the warm-up). Returns the run
    (cross-entropy on the whole training split) and AGVM's final multipliers.
    """
    steps, warmup, eval_every = AGVM_SCALES[scale]
    x_train, y_train, _, _ = load_digits_split()
    generator = torch.Generator().manual_seed(seed)
    model = build_seeded(_two_module_digits, generator)
    opt = torch.optim.SGD(module_param_groups(model, ["backbone", "head"], lr=lr, momentum=0.9))
    agvm = AGVM(opt, update_interval=1, start_iter=warmup)

    def loss_fn(idx: Tensor) -> Tensor:
        return AGVM_HEAD_WEIGHT * F.cross_entropy(model(x_train[idx]), y_train[idx])

    def train_loss() -> float:
        with torch.no_grad():
            return float(F.cross_entropy(model(x_train), y_train))

    run = _Run([0], [0.0], [train_loss()])
    elapsed = 0.0
    for step in range(1, steps + 1):
        idx = torch.randperm(len(x_train), generator=generator)[:AGVM_BATCH]
        start = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, step / warmup)
        agvm.zero_grad()
        if use_agvm:
            half = AGVM_BATCH // 2
            loss = agvm.backward(loss_fn(idx[:half]), loss_fn(idx[half:]))
            agvm.step()
        else:
            loss = loss_fn(idx)
            loss.backward()
            opt.step()
            loss = loss.detach()
        elapsed += time.perf_counter() - start
        advance(1)
        if not math.isfinite(float(loss)):
            advance(steps - step)
            run.failure = f"seed {seed}: loss became non-finite at step {step}"
            return run, agvm.multipliers
        if step % eval_every == 0 or step == steps:
            value = train_loss()
            if not math.isfinite(value):
                advance(steps - step)
                run.failure = f"seed {seed}: training-split loss became non-finite at step {step}"
                return run, agvm.multipliers
            run.steps.append(step)
            run.seconds.append(elapsed)
            run.values.append(value)
    return run, agvm.multipliers


def agvm_claim(ctx: ClaimContext) -> ClaimOutcome:
    steps = AGVM_SCALES[ctx.scale][0]
    grid_runs = {}
    for lr in AGVM_LR_GRID[ctx.scale]:
        advance = ctx.track(f"SGD lr={lr:.4g} (seed {ctx.seeds[0]})", steps)
        grid_runs[lr] = _digits_two_module_run(ctx.seeds[0], ctx.scale, lr, False, advance)[0]
    table = {lr: r.final for lr, r in grid_runs.items()}
    finite = [v for v in table.values() if math.isfinite(v)]
    best = min(finite) if finite else math.nan
    degraded = [lr for lr, v in table.items() if not math.isfinite(v) or v > AGVM_DEGRADED * best]
    details = {"sgd_grid_final_train_loss (seed 0)": grid_note(table)}
    if not finite or not degraded:
        reason = "every plain SGD run diverged" if not finite else "plain SGD did not degrade on the lr grid"
        series = [_series(f"SGD lr={lr:.4g}", "train_loss", [r]) for lr, r in grid_runs.items() if r.failure is None]
        return ClaimOutcome(INCONCLUSIVE, reason, metrics={"sgd_best_grid_loss": best}, series=series, details=details)
    lr = min(degraded)
    advance = ctx.track(f"SGD lr={lr:.4g}", steps * len(ctx.seeds))
    sgd = [_digits_two_module_run(seed, ctx.scale, lr, False, advance)[0] for seed in ctx.seeds]
    advance = ctx.track(f"SGD + AGVM lr={lr:.4g}", steps * len(ctx.seeds))
    agvm_results = [_digits_two_module_run(seed, ctx.scale, lr, True, advance) for seed in ctx.seeds]
    agvm_runs = [r for r, _ in agvm_results]
    sgd_loss = statistics.fmean(r.final for r in sgd)
    agvm_loss = statistics.fmean(r.final for r in agvm_runs)
    all_finite = all(r.failure is None for r in agvm_runs)
    not_degraded = agvm_loss <= AGVM_DEGRADED * best
    verdict = HELD if all_finite and not_degraded and agvm_loss < sgd_loss else NOT_HELD
    summary = (
        f"at lr {lr:.4g} (the smallest grid lr where plain SGD degrades: final loss > {AGVM_DEGRADED:g}x the grid's "
        f"best {best:.4f}, or diverges), mean final training loss SGD + AGVM {agvm_loss:.4f} vs plain SGD "
        f"{sgd_loss:.4f}; AGVM finite in {sum(r.failure is None for r in agvm_runs)}/{len(agvm_runs)} seeds "
        f"(held if AGVM is finite in all seeds, not degraded (<= {AGVM_DEGRADED * best:.4f}) and below plain SGD)"
    )
    return ClaimOutcome(
        verdict,
        summary,
        metrics={
            "sgd_final_train_loss": sgd_loss,
            "agvm_final_train_loss": agvm_loss,
            "lr": lr,
            "sgd_best_grid_loss": best,
            "agvm_head_multiplier_mean": statistics.fmean(m[1] for _, m in agvm_results),
        },
        per_seed={
            "sgd_final_train_loss": [r.final for r in sgd],
            "agvm_final_train_loss": [r.final for r in agvm_runs],
            "agvm_head_multiplier": [m[1] for _, m in agvm_results],
        },
        series=[
            _series(f"SGD lr={lr:.4g}", "train_loss", sgd),
            _series(f"SGD + AGVM lr={lr:.4g}", "train_loss", agvm_runs),
        ],
        details=details
        | {
            "workload": f"digits, conv backbone + MLP head, loss {AGVM_HEAD_WEIGHT:g} x cross-entropy, batch "
            f"{AGVM_BATCH} of 1437, SGD momentum 0.9, linear warm-up then constant lr; AGVM halves = batch halves, "
            "updated every step after the warm-up (official: every 5 or 10 of thousands), momentum 0.97",
        },
        failures=[f"SGD: {r.failure}" for r in sgd if r.failure]
        + [f"AGVM: {r.failure}" for r in agvm_runs if r.failure],
    )


register(
    Claim(
        key="agvm",
        statement="AGVM can align the gradient variances between different modules in the dense visual predictors "
        "... We show that training with a large batch size can fail with the gradient variances misaligned among "
        "them",
        measures="a two-module network (conv backbone + MLP head, loss weight 10) on the digits at batch 1024 with "
        "SGD + momentum: the smallest lr of a grid at which plain SGD degrades (final training loss > 1.5x the "
        "grid's best on seed 0, or divergence) is chosen from the baseline alone; plain SGD and SGD + AGVM then "
        "train at that lr on every seed",
        threshold="SGD + AGVM finite in all seeds, and its mean final training loss <= 1.5x plain SGD's best grid "
        "loss (not degraded) and < plain SGD's at the chosen lr",
        run=agvm_claim,
        default=False,
    )
)
