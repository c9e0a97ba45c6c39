"""Claim of "Just One Byte (per gradient)" (arXiv 2306.10015): K processes that exchange one int8 projected gradient per
step fine-tune faster per round than one process doing zeroth-order fine-tuning alone, without wasting the extra
compute, and int8 scalars lose nothing measurable against fp32 scalars.

Workload: an MLP 64-16-10 pretrained with Adam on scikit-learn's 8x8 digits, then fine-tuned with SharedSeedSPSA on a
shifted task (the same digits mirrored left to right). Each of the K = 4 processes draws its batches from its own
quarter of the training set; the single process draws from all of it. Every round takes two forward passes per
process on a batch of the same size. Three comparisons, paired by seed (the pretrained model, the clip and the
perturbation stream of rank 0 are the seed's):

* per round (equal forward passes per process): K processes against 1 process over the same rounds;
* at equal total compute: K processes over R rounds against 1 process over K R rounds (the same forward passes in all);
* int8 against fp32 scalars, K processes, the same learning rate.

Each configuration's learning rate is tuned on a shared grid on the tuning seeds (``tune``), for the metric it is
judged on, and recorded; fp32 runs at the int8 pick, so that comparison isolates the quantisation. The clip of the
int8 code is fixed before training by a rule, 3 standard deviations of the projected gradient at the pretrained
weights. Measured on CPU with local gloo processes.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from thrifty.bench.claim import INCONCLUSIVE, Claim, ClaimContext, ClaimOutcome, Series
from thrifty.bench.claims import register
from thrifty.bench.compare import compare
from thrifty.bench.experiment import tune
from thrifty.data.digits import load_digits_split
from thrifty.distributed import spawn
from thrifty.distributed.one_byte import SharedSeedSPSA

ONE_BYTE_PROCESSES = 4
ONE_BYTE_BATCH = 32
ONE_BYTE_EPS = 1e-3  # MeZO's default perturbation scale
ONE_BYTE_HIDDEN = 16
# rounds R, learning-rate grid (K processes average K estimates, so the grid reaches 8x its smallest value), evaluations
ONE_BYTE_SCALES = {
    "smoke": (40, [0.01, 0.04], 2),
    "quick": (600, [0.005, 0.01, 0.02, 0.04, 0.08], 12),
    "full": (3000, [0.0025, 0.005, 0.01, 0.02, 0.04, 0.08], 30),
}
ROUND_MARGIN = 0.10  # "K machines converge faster per round": mean loss over the run at least 10% below 1 process's
COMPUTE_MARGIN = 0.05  # equal total compute: K processes' final loss at most 5% above 1 process's with K x the rounds
INT8_MARGIN = 0.02  # "just one byte" loses nothing: int8 final loss at most 2% above fp32's


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, ONE_BYTE_HIDDEN), nn.Tanh(), nn.Linear(ONE_BYTE_HIDDEN, 10))


def _mirror(x: torch.Tensor) -> torch.Tensor:
    return x.view(-1, 8, 8).flip(-1).reshape(-1, 64)


def _pretrain(seed: int) -> list[list[float]]:
    x, y, _, _ = load_digits_split()
    with torch.random.fork_rng():  # the seed's initial weights, without touching the caller's global generator
        torch.manual_seed(seed)
        model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return [p.detach().flatten().tolist() for p in model.parameters()]


def _load(state: list[list[float]]) -> nn.Module:
    model = _model()
    with torch.no_grad():
        for p, values in zip(model.parameters(), state, strict=True):
            p.copy_(torch.tensor(values).view_as(p))
    return model


def _calibrate_clip(state: list[list[float]], seed: int) -> float:
    x, y, _, _ = load_digits_split()
    x = _mirror(x)
    model = _load(state)
    opt = SharedSeedSPSA(model, lr=1.0, eps=ONE_BYTE_EPS)
    gen = torch.Generator().manual_seed(seed)
    values = []
    for s in range(64):
        idx = torch.randint(0, len(x), (ONE_BYTE_BATCH,), generator=gen)
        values.append(opt.projected_gradient(lambda idx=idx: F.cross_entropy(model(x[idx]), y[idx]), 10_000 + s))
    return 3.0 * statistics.pstdev(values)


def _fine_tune(rank: int, world_size: int, jobs: list[tuple]) -> list[tuple[list[int], list[float], float]]:
    """Run each job ``(state, seed, rounds, lr, evals, clip, quantize)`` in this process group, one after another;
    returns per job the evaluation rounds, the full-set loss at each, and the bytes sent per round."""
    x, y, _, _ = load_digits_split()
    x = _mirror(x)
    shard = torch.arange(rank, len(x), world_size)
    out = []
    for state, seed, rounds, lr, evals, clip, quantize in jobs:
        checkpoints = sorted({round(rounds * i / evals) for i in range(evals + 1)})
        model = _load(state)
        opt = SharedSeedSPSA(model, lr=lr, eps=ONE_BYTE_EPS, clip=clip, seed=seed, quantize=quantize)
        gen = torch.Generator().manual_seed(seed * 1000 + rank)
        curve = []
        for t in range(rounds + 1):
            if t in checkpoints:
                with torch.no_grad():
                    curve.append(float(F.cross_entropy(model(x), y)))
            if t == rounds:
                break
            idx = shard[torch.randint(0, len(shard), (ONE_BYTE_BATCH,), generator=gen)]
            with torch.no_grad():
                opt.step(lambda idx=idx, model=model: F.cross_entropy(model(x[idx]), y[idx]))
        out.append((checkpoints, curve, opt.bytes_sent / rounds))
    return out


def _run_all(k: int, runs: dict[tuple, tuple], evals: int) -> dict[tuple, tuple[list[int], list[float], float]]:
    """Run every ``(world, seed, lr, quantize, rounds) -> (state, clip)`` job: single-process ones here, the rest in
    one process group of ``k`` processes (starting processes is the slow part)."""
    results = {}
    for world in sorted({1, k}):
        keys = [key for key in runs if key[0] == world]
        jobs = [(runs[key][0], key[1], key[4], key[2], evals, runs[key][1], key[3]) for key in keys]
        if not jobs:
            continue
        out = _fine_tune(0, 1, jobs) if world == 1 else spawn(_fine_tune, world, jobs, timeout_s=1800)[0]
        results.update(zip(keys, out, strict=True))
    return results


def _area(curve: list[float]) -> float:
    """Mean loss over the run's evaluations after the start: lower means faster convergence."""
    return statistics.fmean(curve[1:])


def _final(curve: list[float]) -> float:
    return curve[-1]


@contextmanager
def _one_thread() -> Iterator[None]:
    """One intra-op thread for the work done in this process, as in the spawned ones: the model is tiny, and extra
    threads only contend (ten times slower on a busy machine); the caller's setting is restored."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def one_byte_claim(ctx: ClaimContext) -> ClaimOutcome:
    with _one_thread():
        return _one_byte(ctx)


def _one_byte(ctx: ClaimContext) -> ClaimOutcome:
    rounds, lrs, evals = ONE_BYTE_SCALES[ctx.scale]
    k = ONE_BYTE_PROCESSES
    advance = ctx.track("one-byte fine-tuning (tuning, then judged seeds)", 2)
    prepared = {}
    for seed in [*ctx.tuning_seeds, *ctx.seeds]:
        state = _pretrain(seed)
        prepared[seed] = (state, _calibrate_clip(state, seed))
    # configurations: (world, rounds, quantize) and what each is tuned and judged on
    per_round, single, long_single = (k, rounds, True), (1, rounds, True), (1, k * rounds, True)
    metric = {per_round: _area, single: _area, long_single: _final}
    tuning_runs = {
        (world, seed, lr, quantize, length): prepared[seed]
        for world, length, quantize in metric
        for seed in ctx.tuning_seeds
        for lr in lrs
    }
    tuned = _run_all(k, tuning_runs, evals)
    advance(1)
    labels = {
        per_round: f"{k} processes, int8",
        single: "1 process, int8",
        long_single: f"1 process, int8, {k}x the rounds",
    }
    tunings = {
        config: tune(
            ctx,
            labels[config],
            lrs,
            lambda lr, seed, c=config: metric[c](tuned[(c[0], seed, lr, c[2], c[1])][1]),
            "mean loss over the run" if metric[config] is _area else "final loss",
            False,
        )
        for config in metric
    }
    best = {config: t.chosen for config, t in tunings.items()}
    if any(lr is None for lr in best.values()):
        failed = [labels[c] for c, lr in best.items() if lr is None]
        return ClaimOutcome(
            INCONCLUSIVE,
            f"every learning rate of the grid diverged on the tuning seeds for {', '.join(failed)}",
            tuning=[t.to_dict() for t in tunings.values()],
        )
    fp32 = (k, rounds, False)
    best[fp32] = best[per_round]
    judged_runs = {
        (world, seed, best[(world, length, quantize)], quantize, length): prepared[seed]
        for world, length, quantize in (*metric, fp32)
        for seed in ctx.seeds
    }
    results = _run_all(k, judged_runs, evals)
    advance(1)

    def curves(config: tuple) -> list[tuple[list[int], list[float], float]]:
        world, length, quantize = config
        return [results[(world, seed, best[config], quantize, length)] for seed in ctx.seeds]

    def values(config: tuple, reduce) -> list[float]:
        return [reduce(curve) for _, curve, _ in curves(config)]

    round_cmp = compare(
        f"mean loss over {rounds} rounds, {k} processes vs 1 (equal forward passes per process), relative",
        values(per_round, _area),
        values(single, _area),
        better="lower",
        margin=ROUND_MARGIN,
        relative=True,
    )
    compute_cmp = compare(
        f"final loss, {k} processes x {rounds} rounds vs 1 process x {k * rounds} rounds (equal total forward "
        "passes), relative",
        values(per_round, _final),
        values(long_single, _final),
        better="lower",
        margin=COMPUTE_MARGIN,
        kind="noninferior",
        relative=True,
    )
    int8_cmp = compare(
        f"final loss, int8 vs fp32 scalars, {k} processes, relative",
        values(per_round, _final),
        values(fp32, _final),
        better="lower",
        margin=INT8_MARGIN,
        kind="noninferior",
        relative=True,
    )
    sent = {quantize: curves(config)[0][2] for quantize, config in ((True, per_round), (False, fp32))}
    start = statistics.fmean(curve[0] for _, curve, _ in curves(single))
    mean = statistics.fmean
    k_final = mean(values(per_round, _final))
    summary = (
        f"start loss {start:.3f}; mean loss over {rounds} rounds: {k} processes {mean(values(per_round, _area)):.3f} "
        f"(lr {best[per_round]:g}) vs 1 process {mean(values(single, _area)):.3f} (lr {best[single]:g}); final loss "
        f"{k_final:.3f} vs 1 process with {k}x the rounds {mean(values(long_single, _final)):.3f} (lr "
        f"{best[long_single]:g}); int8 {k_final:.3f} vs fp32 {mean(values(fp32, _final)):.3f}; {sent[True]:g} byte "
        f"sent per process per round (fp32: {sent[False]:g})"
    )
    num_params = sum(p.numel() for p in _model().parameters())
    series = []
    for config, label in (*labels.items(), (fp32, f"{k} processes, fp32")):
        s = Series(label=label, metric="train_loss (full set) by round")
        for checkpoints, curve, _ in curves(config):
            s.add(checkpoints, [float("nan")] * len(checkpoints), curve)
        series.append(s)
    return ClaimOutcome.judged(
        summary,
        [round_cmp, compute_cmp, int8_cmp],
        metrics={
            "mean_loss_k_processes_int8": mean(values(per_round, _area)),
            "mean_loss_1_process_int8": mean(values(single, _area)),
            "final_loss_k_processes_int8": mean(values(per_round, _final)),
            "final_loss_k_processes_fp32": mean(values(fp32, _final)),
            "final_loss_1_process_int8": mean(values(single, _final)),
            "final_loss_1_process_k_rounds_int8": mean(values(long_single, _final)),
            "bytes_per_process_per_step_int8": sent[True],
            "bytes_per_process_per_step_fp32": sent[False],
            "bytes_per_process_per_step_first_order_fp32": 4.0 * num_params,
            "start_loss": start,
        },
        per_seed={
            "mean_loss_k_int8": values(per_round, _area),
            "mean_loss_1_int8": values(single, _area),
            "final_k_int8": values(per_round, _final),
            "final_k_fp32": values(fp32, _final),
            "final_1_k_rounds_int8": values(long_single, _final),
            "clip": [prepared[seed][1] for seed in ctx.seeds],
        },
        series=series,
        details={
            "workload": f"digits MLP 64-{ONE_BYTE_HIDDEN}-10 ({num_params} parameters) pretrained with Adam (300 "
            f"full-batch steps), fine-tuned on mirrored digits; batch {ONE_BYTE_BATCH} per process, eps "
            f"{ONE_BYTE_EPS:g}, {rounds} rounds = {2 * rounds} forward passes per process ({k} processes) or "
            f"{k * rounds} rounds (1 process at equal total compute)",
            "lr": "tuned per configuration on the tuning seeds over the shared grid (see tuning): mean loss over the "
            "run for the per-round comparison, final loss for the 1-process run at equal total compute; fp32 runs at "
            "the int8 pick",
            "clip": "3 standard deviations of the projected gradient at the pretrained weights (64 draws), fixed "
            "before fine-tuning and shared by all processes",
            "bytes": "payload per process per step; all_gather delivers K such payloads to every process",
            "scale": "measured, CPU, local gloo processes (one thread each)",
        },
        tuning=[t.to_dict() for t in tunings.values()],
    )


register(
    Claim(
        key="one_byte",
        statement="As machines only exchange single-byte projected gradients, this is highly communication efficient.",
        measures="full-training-set loss of a pretrained digits MLP fine-tuned on mirrored digits by SharedSeedSPSA, "
        "paired by seed: 4 processes vs 1 process over the same rounds (mean loss over the run), 4 processes vs 1 "
        "process with 4x the rounds (final loss, equal total forward passes), int8 vs fp32 projected gradients "
        "(final loss); learning rates tuned per configuration on tuning seeds; bytes sent per step",
        threshold=f"relative change, 90% t-interval: per round below -{ROUND_MARGIN:.0%}; at equal total compute "
        f"below +{COMPUTE_MARGIN:.0%} (non-inferior); int8 vs fp32 below +{INT8_MARGIN:.0%} (non-inferior)",
        run=one_byte_claim,
        default=False,
    )
)
