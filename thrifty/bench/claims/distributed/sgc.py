"""Claim of "Sequential Gradient Coding For Straggler Mitigation" (arXiv 2211.13802): on bursty stragglers the
multiplexed sequential scheme (M-SGC) finishes the same jobs as gradient coding (GC) in a shorter runtime (the paper:
16% faster than GC on 256 AWS Lambda workers).

Two measurements, labelled:

* **simulated, 256 workers**: Gilbert-Elliott straggler traces (each worker turns slow with probability 0.005 per
  round and recovers with probability 0.5: about 1% stragglers in bursts of 2 rounds on average, 3x slower). A worker's
  round time is a fixed latency plus its computation, proportional to its normalised load (one ``1/n`` share of a job
  costs a quarter of the latency), with 5% jitter; the master applies the official wait rule (``mu = 0.1``).
* **measured, 4 local gloo processes**: the same protocol with the delays injected as sleeps (stragglers' waits cut at
  the deadline), training softmax-regression models on digits round-robin (``coded_training``). Both schemes decode
  exact gradients, so their trained models agree (reported).

Each scheme's parameters (GC: ``s``; SR-SGC and M-SGC: ``(B, W, lambda)`` with delay ``T <= 6`` at quick scale) are
tuned for the shortest simulated runtime on calibration traces drawn from the tuning seeds, once, and recorded; every
judged seed then runs them on its own fresh trace.
"""

from __future__ import annotations

import statistics

import numpy as np
import torch

from thrifty.bench.claim import Claim, ClaimContext, ClaimOutcome
from thrifty.bench.claims import register
from thrifty.bench.claims.distributed.coded_training import CodedTrainingSpec, coded_training
from thrifty.bench.compare import compare
from thrifty.bench.experiment import tune
from thrifty.distributed import spawn
from thrifty.distributed.sgc import gilbert_elliott_trace, make_coder, simulate, worker_times

SCHEMES = {"method": "msgc", "baseline": "gc", "other": "srsgc"}  # M-SGC judged against GC; SR-SGC reported
SIM_MARGIN = 0.08  # "a 16% improvement in runtime over the baseline GC": here at least half of it, 8% shorter
REAL_MARGIN = 0.0  # 4 processes are far from the paper's 256 workers: the measured runtime need only be shorter
# simulated workers, jobs, max lambda and s searched, max delay T; real processes, real jobs
SGC_SCALES = {
    "smoke": (64, 40, 8, 3, 4, 12),
    "quick": (256, 200, 32, 6, 4, 40),
    "full": (256, 1000, 48, 8, 4, 100),
}
SGC_TRACE = {"sim": (0.005, 0.5), "real": (0.05, 0.5)}  # (p good->bad, p bad->good) per worker per round
SGC_TRACE_SEED = {"sim": 0, "real": 30_000}  # offsets of a seed's trace generator
SGC_JITTER_SEED = {"sim": 50_000, "real": 80_000}  # and of its jitter generator
SGC_TIMES = {  # latency, seconds per 1/n share of a job, straggler slowdown, jitter, mu
    "sim": dict(latency=1.0, unit=0.25, slowdown=3.0, jitter=0.05, mu=0.1),
    "real": dict(latency=0.06, unit=0.015, slowdown=3.0, jitter=0.05, mu=0.5),
}
SGC_REAL_BATCH = 240


def _grid(scheme: str, n: int, max_param: int, max_delay: int) -> list[tuple[int, ...]]:
    """The parameter tuples of ``scheme``: ``s, lambda <= max_param`` (or ``lambda = n``), delay <= ``max_delay``."""
    if scheme == "gc":
        return [(s,) for s in range(min(max_param, n - 1) + 1)]
    lambdas = sorted({*range(min(max_param, n) + 1), n})
    out = []
    for b in range(1, max_delay + 1):
        for w in range(b + 1, max_delay + 3):
            if scheme == "msgc" and w - 2 + b <= max_delay:
                out += [(b, w, lam) for lam in lambdas]
            if scheme == "srsgc" and (w - 1) % b == 0:
                # only the largest lambda per s matters (same load, more tolerance)
                for s in range(1, min(max_param, n - 1) + 1):
                    lam = min(n, s * (w - 1 + b) // b)
                    if lam >= 1:
                        out.append((b, w, lam))
    return sorted(set(out))


def _trace(kind: str, n: int, rounds: int, seed: int) -> np.ndarray:
    generator = torch.Generator().manual_seed(SGC_TRACE_SEED[kind] + seed)
    return gilbert_elliott_trace(n, rounds, *SGC_TRACE[kind], generator)


def _worker_times(coder, trace: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """Per-worker job times of ``coder`` on a straggler ``trace`` with the ``kind`` (simulated or real) timing model;
    the jitter is drawn from the seed, the same for every scheme."""
    t = SGC_TIMES[kind]
    generator = torch.Generator().manual_seed(SGC_JITTER_SEED[kind] + seed)
    return worker_times(
        trace,
        coder.load,
        unit=t["unit"],
        latency=t["latency"],
        slowdown=t["slowdown"],
        jitter=t["jitter"],
        generator=generator,
    )


def _simulate(scheme: str, n: int, params: tuple[int, ...], jobs: int, span: int, kind: str, seed: int):
    coder = make_coder(scheme, n, params)
    trace = _trace(kind, n, span, seed)
    return simulate(coder, _worker_times(coder, trace, kind, seed), jobs, SGC_TIMES[kind]["mu"])


def _all(rank: int, world_size: int, specs: list[CodedTrainingSpec]) -> list[dict]:
    return [coded_training(rank, world_size, spec) for spec in specs]


def sgc_claim(ctx: ClaimContext) -> ClaimOutcome:
    n, jobs, max_param, max_delay, n_real, jobs_real = SGC_SCALES[ctx.scale]
    span, span_real = jobs + max_delay + 2, jobs_real + max_delay + 2
    roles, measured_roles = ("baseline", "other", "method"), ("baseline", "method")
    sims = {r: _grid(SCHEMES[r], n, max_param, max_delay) for r in roles}
    reals = {r: _grid(SCHEMES[r], n_real, n_real, max_delay) for r in measured_roles}
    advance = ctx.track(
        "sequential gradient coding (tuning, then seeds x simulate, real)",
        sum(map(len, sims.values())) + sum(map(len, reals.values())) + 2 * len(ctx.seeds),
    )

    def tuned(role: str, grid: list[tuple[int, ...]], nodes: int, work: int, length: int, kind: str):
        scheme = SCHEMES[role]

        def evaluate(params: tuple[int, ...], seed: int) -> float:
            return _simulate(scheme, nodes, params, work, length, kind, seed).runtime

        tuning = tune(ctx, f"{role} {scheme} parameters ({kind})", grid, evaluate, f"simulated runtime ({kind})", False)
        advance(len(grid))
        return tuning

    sim_tuning = {r: tuned(r, sims[r], n, jobs, span, "sim") for r in roles}
    real_tuning = {r: tuned(r, reals[r], n_real, jobs_real, span_real, "real") for r in measured_roles}
    sim_params = {r: t.chosen for r, t in sim_tuning.items()}
    real_params = {r: t.chosen for r, t in real_tuning.items()}

    sim: dict[str, list] = {r: [] for r in roles}
    real: dict[str, list[dict]] = {r: [] for r in measured_roles}
    sim_rows, real_rows = [], []
    models = 1 + max(make_coder(SCHEMES[r], n_real, p).delay for r, p in real_params.items())
    specs = []
    for seed in ctx.seeds:
        # ---------------- simulated, n workers
        test = _trace("sim", n, span, seed)
        row = {"seed": seed, "mean_stragglers": float(test.sum(1).mean()), "max_stragglers": int(test.sum(1).max())}
        for role in roles:
            res = _simulate(SCHEMES[role], n, sim_params[role], jobs, span, "sim", seed)
            sim[role].append(res)
            row[role] = {"runtime": res.runtime, "load": res.load, "waited": res.waited_rounds}
        sim_rows.append(row)
        advance(1)
        # ---------------- the seed's measured runs: its own trace, injected as delays
        trace = _trace("real", n_real, span_real, seed)
        for role in measured_roles:
            coder = make_coder(SCHEMES[role], n_real, real_params[role])
            delays = _worker_times(coder, trace[: jobs_real + coder.delay], "real", seed)
            specs.append(
                CodedTrainingSpec(
                    SCHEMES[role],
                    real_params[role],
                    jobs_real,
                    delays,
                    batch_size=SGC_REAL_BATCH,
                    num_models=models,
                    mu=SGC_TIMES["real"]["mu"],
                    seed=seed,
                )
            )
    # every seed's runs in one process group, one after another (starting processes is the slow part)
    out = spawn(_all, n_real, specs, timeout_s=1800)
    for j, seed in enumerate(ctx.seeds):
        row = {"seed": seed}
        runs = []
        for k, role in enumerate(measured_roles):
            index = j * len(measured_roles) + k
            runs.append(out[0][index])
            rounds = len(out[0][index]["round_seconds"])
            simulated = _simulate(SCHEMES[role], n_real, real_params[role], jobs_real, span_real, "real", seed)
            measured = {
                "seconds": float(sum(out[0][index]["round_seconds"])),
                "load": out[0][index]["load"],
                "measured_load": sum(o[index]["samples"] for o in out) / (n_real * rounds * SGC_REAL_BATCH),
                "simulated_runtime": simulated.runtime,
            }
            real[role].append(measured)
            row[role] = measured
        row["param_gap"] = max(
            float((torch.tensor(a) - torch.tensor(b)).abs().max())
            for a, b in zip(runs[0]["params"], runs[1]["params"], strict=True)
        )
        real_rows.append(row)
        advance(1)

    def sim_values(role: str, key: str) -> list[float]:
        return [getattr(r, key) for r in sim[role]]

    def real_values(role: str, key: str) -> list[float]:
        return [r[key] for r in real[role]]

    sim_runtime = compare(
        f"simulated runtime, {n} workers, M-SGC vs GC, relative",
        sim_values("method", "runtime"),
        sim_values("baseline", "runtime"),
        better="lower",
        margin=SIM_MARGIN,
        relative=True,
    )
    real_runtime = compare(
        f"measured wall clock, {n_real} gloo processes, M-SGC vs GC, relative",
        real_values("method", "seconds"),
        real_values("baseline", "seconds"),
        better="lower",
        margin=REAL_MARGIN,
        relative=True,
    )
    reported = [
        compare(
            "simulated load, M-SGC vs GC, relative (fixed by the tuned parameters: exact)",
            sim_values("method", "load"),
            sim_values("baseline", "load"),
            better="lower",
            margin=0.0,
            relative=True,
            exact=True,
        ),
        compare(
            "measured load (samples per worker per round / batch), M-SGC vs GC, relative",
            real_values("method", "measured_load"),
            real_values("baseline", "measured_load"),
            better="lower",
            margin=0.0,
            relative=True,
        ),
        compare(
            "simulated runtime, SR-SGC vs GC, relative",
            sim_values("other", "runtime"),
            sim_values("baseline", "runtime"),
            better="lower",
            margin=0.0,
            relative=True,
        ),
    ]

    def mean(values: list[float]) -> float:
        return statistics.fmean(values)

    sim_m, sim_b = mean(sim_values("method", "runtime")), mean(sim_values("baseline", "runtime"))
    real_m, real_b = mean(real_values("method", "seconds")), mean(real_values("baseline", "seconds"))
    summary = (
        f"simulated, {n} workers, {jobs} jobs: M-SGC {sim_params['method']} runtime {sim_m:.1f} vs GC "
        f"{sim_params['baseline']} {sim_b:.1f} (paper: 16% shorter), load {sim['method'][0].load * n:.2f}/n vs "
        f"{sim['baseline'][0].load * n:.2f}/n; measured, {n_real} gloo processes, {jobs_real} jobs: {real_m:.2f} s vs "
        f"{real_b:.2f} s"
    )
    tunings = list(sim_tuning.values()) + list(real_tuning.values())
    return ClaimOutcome.judged(
        summary,
        [sim_runtime, real_runtime],
        reported=reported,
        metrics={
            "simulated_runtime_change": sim_runtime.effect,
            "simulated_runtime_msgc": mean(sim_values("method", "runtime")),
            "simulated_runtime_gc": mean(sim_values("baseline", "runtime")),
            "simulated_runtime_srsgc": mean(sim_values("other", "runtime")),
            "simulated_load_msgc": sim["method"][0].load,
            "simulated_load_gc": sim["baseline"][0].load,
            "simulated_load_srsgc": sim["other"][0].load,
            "measured_wallclock_change": real_runtime.effect,
            "measured_seconds_msgc": mean(real_values("method", "seconds")),
            "measured_seconds_gc": mean(real_values("baseline", "seconds")),
            "measured_load_msgc": mean(real_values("method", "measured_load")),
            "measured_load_gc": mean(real_values("baseline", "measured_load")),
            "max_param_gap_msgc_vs_gc": max(r["param_gap"] for r in real_rows),
        },
        per_seed={
            "simulated_runtime_msgc": sim_values("method", "runtime"),
            "simulated_runtime_gc": sim_values("baseline", "runtime"),
            "simulated_runtime_srsgc": sim_values("other", "runtime"),
            "measured_seconds_msgc": real_values("method", "seconds"),
            "measured_seconds_gc": real_values("baseline", "seconds"),
        },
        details={
            "simulated (per seed)": sim_rows,
            "measured (per seed)": real_rows,
            "params": "gc: (s,); srsgc, msgc: (B, W, lambda); each tuned for the shortest simulated runtime on "
            f"calibration traces of the tuning seeds {ctx.tuning_seeds} (see tuning), the same for every judged seed: "
            + ", ".join(
                f"{r} {SCHEMES[r]} {sim_params[r]} simulated, {real_params.get(r, '-')} measured" for r in roles
            ),
            "time_model": {k: dict(v) for k, v in SGC_TIMES.items()},
            "trace": {k: {"p_good_bad": v[0], "p_bad_good": v[1]} for k, v in SGC_TRACE.items()},
            "load": "normalised computational load: data per worker per round as a fraction of one job; measured = "
            "samples whose gradient a worker computed per round / batch",
            "gc_rule": "GC decodes with <= s stragglers (Tandon); the official simulator's GC uses < s, which would "
            "handicap GC",
            "scale": f"simulated ({n} workers, cost model above) and measured (CPU, {n_real} local gloo processes, "
            f"injected sleeps, {models} models trained round-robin; wall clock is noisy on a shared machine)",
        },
        tuning=[t.to_dict() for t in tunings],
    )


register(
    Claim(
        key="sgc",
        statement="We demonstrate that the latter scheme can yield a 16% improvement in runtime over the baseline GC "
        "scheme, in the presence of naturally occurring, non-simulated stragglers.",
        measures="runtime of M-SGC vs GC on Gilbert-Elliott bursty straggler traces, per judged seed (its own trace): "
        "simulated at 256 workers (latency + load-proportional compute, official wait rule), and measured on 4 gloo "
        "processes training digits models with injected delays; each scheme's parameters tuned for the shortest "
        "simulated runtime on calibration traces of the tuning seeds; loads and SR-SGC reported",
        threshold=f"simulated runtime change: 90% t-interval below -{SIM_MARGIN:.0%}; measured wall-clock change: "
        f"below {REAL_MARGIN:.0%}",
        run=sgc_claim,
        default=False,
    )
)
