"""Claim of "Just One Byte (per gradient)" (arXiv 2306.10015): K processes that exchange one int8 projected gradient per
step fine-tune faster per round than one process doing zeroth-order fine-tuning alone, at the same forward passes per
process, and int8 scalars lose nothing measurable against fp32 scalars.

Workload: an MLP 64-16-10 pretrained with Adam on scikit-learn's 8x8 digits, then fine-tuned with SharedSeedSPSA on a
shifted task (the same digits mirrored left to right). Each of the K = 4 processes draws its batches from its own
quarter of the training set; the single process draws from all of it. Every run takes two forward passes per round per
process on a batch of the same size. The learning rate is picked per configuration from the same grid (lowest mean
training loss over the run); the clip of the int8 code is fixed before training at 3 standard deviations of the
projected gradient at the pretrained weights. Measured on CPU with local gloo processes.
"""

from __future__ import annotations

import statistics

import torch
import torch.nn.functional as F
from torch import nn

from thrifty.bench.claim import HELD, NOT_HELD, Claim, ClaimContext, ClaimOutcome, Series
from thrifty.bench.claims import register
from thrifty.data.digits import load_digits_split
from thrifty.distributed import spawn
from thrifty.distributed.one_byte import SharedSeedSPSA

ONE_BYTE_PROCESSES = 4
ONE_BYTE_BATCH = 32
ONE_BYTE_EPS = 1e-3
ONE_BYTE_HIDDEN = 16
# rounds, learning-rate grid, evaluations per run
ONE_BYTE_SCALES = {
    "smoke": (20, [0.01], 2),
    "quick": (600, [0.005, 0.01, 0.02, 0.04], 12),
    "full": (3000, [0.0025, 0.005, 0.01, 0.02, 0.04, 0.08], 30),
}
ONE_BYTE_NOISE_SIGMAS = 2.0  # int8 within 2 seed standard deviations (+1% of the loss) of fp32


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, ONE_BYTE_HIDDEN), nn.Tanh(), nn.Linear(ONE_BYTE_HIDDEN, 10))


def _mirror(x: torch.Tensor) -> torch.Tensor:
    return x.view(-1, 8, 8).flip(-1).reshape(-1, 64)


def _pretrain(seed: int) -> list[list[float]]:
    x, y, _, _ = load_digits_split()
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


def _fine_tune(rank: int, world_size: int, state, seed: int, rounds: int, lrs, evals: int, clip: float):
    """Every (lr, quantisation) run of one seed in this process group; returns curves of the full-set loss."""
    torch.set_num_threads(1)
    x, y, _, _ = load_digits_split()
    x = _mirror(x)
    shard = torch.arange(rank, len(x), world_size)
    checkpoints = sorted({round(rounds * i / evals) for i in range(evals + 1)})
    curves = {}
    for lr in lrs:
        for quantize in (True, False):
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
            curves[(lr, quantize)] = (curve, opt.bytes_sent / rounds)
    return checkpoints, curves


def one_byte_claim(ctx: ClaimContext) -> ClaimOutcome:
    rounds, lrs, evals = ONE_BYTE_SCALES[ctx.scale]
    k = ONE_BYTE_PROCESSES
    advance = ctx.track("one-byte fine-tuning (seeds x {1, 4} processes)", 2 * len(ctx.seeds))
    runs: dict[tuple[int, float, bool], list[list[float]]] = {}
    bytes_per_step: dict[bool, float] = {}
    checkpoints: list[int] = []
    clips = []
    for seed in ctx.seeds:
        state = _pretrain(seed)
        clip = _calibrate_clip(state, seed)
        clips.append(clip)
        checkpoints, single = _fine_tune(0, 1, state, seed, rounds, lrs, evals, clip)
        advance(1)
        multi = spawn(_fine_tune, k, state, seed, rounds, lrs, evals, clip, timeout_s=1200)[0][1]
        advance(1)
        for world, curves in ((1, single), (k, multi)):
            for (lr, quantize), (curve, sent) in curves.items():
                runs.setdefault((world, lr, quantize), []).append(curve)
                bytes_per_step[quantize] = sent

    def area(world: int, lr: float, quantize: bool) -> float:
        return statistics.fmean(statistics.fmean(c[1:]) for c in runs[(world, lr, quantize)])

    def final(world: int, lr: float, quantize: bool) -> list[float]:
        return [c[-1] for c in runs[(world, lr, quantize)]]

    best = {world: min(lrs, key=lambda lr, w=world: area(w, lr, True)) for world in (1, k)}
    single_area, multi_area = area(1, best[1], True), area(k, best[k], True)
    int8_final, fp32_final = final(k, best[k], True), final(k, best[k], False)
    gap = abs(statistics.fmean(int8_final) - statistics.fmean(fp32_final))
    spread = statistics.pstdev(fp32_final) if len(fp32_final) > 1 else 0.0
    tolerance = ONE_BYTE_NOISE_SIGMAS * spread + 0.01 * statistics.fmean(fp32_final)
    faster, matches = multi_area < single_area, gap <= tolerance
    verdict = HELD if faster and matches else NOT_HELD
    start = statistics.fmean(c[0] for c in runs[(1, best[1], True)])
    summary = (
        f"mean full-set loss over {rounds} rounds (start {start:.3f}): {k} processes {multi_area:.3f} vs 1 process "
        f"{single_area:.3f} (int8, best lr each: {best[k]:g} / {best[1]:g}); final loss int8 "
        f"{statistics.fmean(int8_final):.3f} vs fp32 {statistics.fmean(fp32_final):.3f} (|gap| {gap:.4f}, "
        f"tolerance {tolerance:.4f}); {bytes_per_step[True]:g} byte sent per process per step "
        f"(fp32: {bytes_per_step[False]:g})"
    )
    num_params = sum(p.numel() for p in _model().parameters())
    series = []
    for world, quantize in ((1, True), (k, True), (k, False)):
        s = Series(
            label=f"{world} process{'es' if world > 1 else ''}, {'int8' if quantize else 'fp32'}", metric="train_loss"
        )
        for curve in runs[(world, best[world], quantize)]:
            s.add(checkpoints, [float("nan")] * len(checkpoints), curve)
        series.append(s)
    return ClaimOutcome(
        verdict,
        summary,
        metrics={
            "mean_loss_4_processes_int8": multi_area,
            "mean_loss_1_process_int8": single_area,
            "final_loss_4_processes_int8": statistics.fmean(int8_final),
            "final_loss_4_processes_fp32": statistics.fmean(fp32_final),
            "final_loss_1_process_int8": statistics.fmean(final(1, best[1], True)),
            "int8_fp32_gap": gap,
            "int8_fp32_tolerance": tolerance,
            "bytes_per_process_per_step_int8": bytes_per_step[True],
            "bytes_per_process_per_step_fp32": bytes_per_step[False],
            "bytes_per_process_per_step_first_order_fp32": 4.0 * num_params,
            "start_loss": start,
        },
        per_seed={
            "final_4_int8": int8_final,
            "final_4_fp32": fp32_final,
            "final_1_int8": final(1, best[1], True),
            "clip": clips,
        },
        series=series,
        details={
            "workload": f"digits MLP 64-{ONE_BYTE_HIDDEN}-10 ({num_params} parameters) pretrained with Adam (300 "
            f"full-batch steps), fine-tuned on mirrored digits; batch {ONE_BYTE_BATCH} per process, eps "
            f"{ONE_BYTE_EPS:g}, {rounds} rounds = {2 * rounds} forward passes per process",
            "lr_grid": lrs,
            "mean_loss_by_lr": {
                f"{w} proc {'int8' if q else 'fp32'}": [round(area(w, lr, q), 4) for lr in lrs]
                for w in (1, k)
                for q in (True, False)
            },
            "clip": "3 standard deviations of the projected gradient at the pretrained weights (64 draws), fixed "
            "before fine-tuning and shared by all processes",
            "bytes": "payload per process per step; all_gather delivers K such payloads to every process",
            "scale": "measured, CPU, local gloo processes (one thread each)",
        },
    )


register(
    Claim(
        key="one_byte",
        statement="As machines only exchange single-byte projected gradients, this is highly communication efficient.",
        measures="full-training-set loss of a pretrained digits MLP fine-tuned on mirrored digits by SharedSeedSPSA "
        "with 4 processes vs 1 process at equal forward passes per process (best lr of a shared grid each), int8 vs "
        "fp32 projected gradients, and bytes sent per step",
        threshold="4-process mean loss over the run < 1-process mean loss (int8), and |final int8 - final fp32| <= "
        f"{ONE_BYTE_NOISE_SIGMAS:g} seed std + 1% of the fp32 loss",
        run=one_byte_claim,
        default=False,
    )
)
