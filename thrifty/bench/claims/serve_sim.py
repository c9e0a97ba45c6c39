"""Simulated claims of the serving papers (SARATHI, Sarathi-Serve, BatchLLM) on the calibrated GPU cost model.

Every figure here is simulated: the real scheduler classes drive ``thrifty.serve.sim``'s discrete-event loop, and a
roofline cost model fitted to Vidur's A100/H100 operator profiles prices each step. Labels name the GPU cost model.
Each claim is a list of *parts* (a measurement with its own threshold); the claim holds when every part holds, so
that a measured-CPU part can join a simulated one under the same key.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thrifty.bench.claim import HELD, NOT_HELD, Claim, ClaimContext, ClaimOutcome, Series
from thrifty.bench.claims import register

__all__ = ["ClaimPart", "combine_parts"]


@dataclass
class ClaimPart:
    """One measurement of a claim: its label (``simulated, A100 cost model`` or ``measured, CPU``), verdict,
    one-line summary, figures and details."""

    name: str
    label: str
    held: bool
    summary: str
    metrics: dict[str, float] = field(default_factory=dict)
    per_seed: dict[str, list[float]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    series: list[Series] = field(default_factory=list)


def combine_parts(parts: list[ClaimPart]) -> ClaimOutcome:
    """A claim outcome from its parts: held iff every part held; metrics prefixed by part name."""
    verdict = HELD if all(p.held for p in parts) else NOT_HELD
    summary = " | ".join(f"[{p.label}] {p.summary} ({'held' if p.held else 'not held'})" for p in parts)
    metrics = {f"{p.name}.{k}": float(v) for p in parts for k, v in p.metrics.items()}
    per_seed = {f"{p.name}.{k}": [float(x) for x in v] for p in parts for k, v in p.per_seed.items()}
    details = {p.name: {"label": p.label, "held": p.held, **p.details} for p in parts}
    series = [s for p in parts for s in p.series]
    return ClaimOutcome(verdict, summary, metrics=metrics, per_seed=per_seed, details=details, series=series)


# ------------------------------------------------------------------------------------------------ Sarathi-Serve

SARATHI_SERVE_SCALES = {"smoke": (48, 6), "quick": (512, 20), "full": (2048, 24)}  # requests, search iterations
SARATHI_SERVE_MIN_RATIO = 2.0
SARATHI_SERVE_SETUP = {"model": "mistral-7b", "gpu": "a100", "trace": "conv", "budget": 512, "max_num_seqs": 128}
MAX_SEQ_LEN = 8192  # sarathi-serve's capacity-search chat trace limit


def simulated_capacity_part(ctx: ClaimContext) -> ClaimPart:
    """Capacity (P99 TBT <= strict SLO, P50 scheduling delay <= 2 s) of sarathi_serve and prefill_first."""
    from thrifty.serve.sim.capacity import SimulatedLoad, capacity_search, strict_tbt_slo
    from thrifty.serve.sim.cost_model import CostModel
    from thrifty.serve.sim.simulator import Simulator, default_config, plot_tbt_cdfs
    from thrifty.serve.sim.workloads import load_trace, trace_requests

    setup = SARATHI_SERVE_SETUP
    num_requests, iterations = SARATHI_SERVE_SCALES[ctx.scale]
    cost = CostModel(setup["model"], setup["gpu"])
    slo = strict_tbt_slo(cost)
    trace = load_trace(setup["trace"])
    policies = ("sarathi_serve", "prefill_first")
    advance = ctx.track("capacity search (simulated)", len(policies) * len(ctx.seeds))
    capacities: dict[str, list[float]] = {p: [] for p in policies}
    searches: dict[str, list[dict]] = {p: [] for p in policies}
    tbts: dict[str, Any] = {}
    for seed in ctx.seeds:
        specs = trace_requests(trace, num_requests, 1.0, seed=seed, max_seq_len=MAX_SEQ_LEN)
        for policy in policies:
            config = default_config(policy, setup["budget"], setup["max_num_seqs"], MAX_SEQ_LEN)
            load = SimulatedLoad(Simulator(cost, policy, config), specs)
            result = capacity_search(load, slo, start_qps=2.0, max_iterations=iterations)
            capacities[policy].append(result.capacity_qps)
            searches[policy].append(result.to_dict())
            if seed == ctx.seeds[0] and result.capacity_qps > 0:
                tbts[policy] = load.results[result.capacity_qps].tbt
            advance(1)
    ratios = [
        s / p if p > 0 else float("inf")
        for s, p in zip(capacities["sarathi_serve"], capacities["prefill_first"], strict=True)
    ]
    ratio = statistics.median(ratios)
    held = ratio >= SARATHI_SERVE_MIN_RATIO
    label = cost.label
    figure = None
    if ctx.out_dir is not None:
        Path(ctx.out_dir).mkdir(parents=True, exist_ok=True)
        path = Path(ctx.out_dir) / "sarathi_serve_tbt_cdf.png"
        title = f"TBT at each policy's capacity, seed {ctx.seeds[0]} ({label})"
        figure = plot_tbt_cdfs(
            {f"{p} at {c[0]:.2f} QPS": tbts[p] for p, c in capacities.items() if p in tbts}, title, path
        )
    summary = (
        f"{setup['model']} on one {cost.gpu.name}, {setup['trace']} trace ({num_requests} requests, Poisson): "
        f"capacity under P99 TBT <= {slo * 1e3:.0f} ms (strict: 5x the decode step at batch 32, 4k context) and "
        f"P50 scheduling delay <= 2 s: sarathi_serve (budget {setup['budget']}) "
        f"{statistics.median(capacities['sarathi_serve']):.2f} QPS vs prefill_first "
        f"{statistics.median(capacities['prefill_first']):.2f} QPS, {ratio:.2f}x (median over {len(ratios)} seeds; "
        f"held if >= {SARATHI_SERVE_MIN_RATIO}x; paper 2.6x)"
    )
    return ClaimPart(
        name="simulated",
        label=label,
        held=held,
        summary=summary,
        metrics={
            "capacity_ratio": ratio,
            "sarathi_serve_capacity_qps": statistics.median(capacities["sarathi_serve"]),
            "prefill_first_capacity_qps": statistics.median(capacities["prefill_first"]),
            "strict_tbt_slo_s": slo,
        },
        per_seed={"capacity_ratio": ratios, **{f"{p}_capacity_qps": c for p, c in capacities.items()}},
        details={
            "setup": setup,
            "capacities": capacities,
            "ratios": ratios,
            "searches": searches,
            "tbt_cdf_figure": str(figure) if figure else None,
        },
    )


def sarathi_serve_claim(ctx: ClaimContext) -> ClaimOutcome:
    return combine_parts([simulated_capacity_part(ctx)])


# ------------------------------------------------------------------------------------------------------ SARATHI

SARATHI_SCALES = {"smoke": 36, "quick": 256, "full": 1024}  # requests of the end-to-end batch
SARATHI_MIN_DECODE_SPEEDUP = 2.0
SARATHI_SETUP = {"model": "llama-13b", "gpu": "a6000", "seq_len": 1024, "budget": 256, "batch_sizes": (6, 12, 18)}


def _decode_speedups(cost, seq_len: int, budget: int, batch_sizes) -> dict[int, dict[str, float]]:
    """Decode throughput of ``B - 1`` decodes at ``seq_len`` context alone against piggybacked on one prefill
    chunk (``budget - (B - 1)`` tokens, a mid-prompt chunk at offset ``seq_len / 2``): the decodes' marginal time is
    the hybrid step minus the chunk alone (SARATHI §5.1)."""
    rows = {}
    for b in batch_sizes:
        decodes = [seq_len] * (b - 1)
        chunk = [(budget - (b - 1), seq_len // 2)]
        alone = cost.batch_time([], decodes, b - 1)
        hybrid = cost.batch_time(chunk, decodes, b - 1)
        chunk_only = cost.batch_time(chunk, [], 0)
        marginal = hybrid - chunk_only
        rows[b] = {
            "decode_only_step_s": alone,
            "hybrid_step_s": hybrid,
            "chunk_only_step_s": chunk_only,
            "decode_only_tokens_per_s": (b - 1) / alone,
            "piggybacked_tokens_per_s": (b - 1) / marginal,
            "speedup": alone / marginal,
        }
    return rows


def simulated_piggyback_part(ctx: ClaimContext) -> ClaimPart:
    from thrifty.serve.sim.cost_model import CostModel
    from thrifty.serve.sim.simulator import Simulator, default_config
    from thrifty.serve.sim.workloads import RequestSpec

    setup = SARATHI_SETUP
    cost = CostModel(setup["model"], setup["gpu"])
    seq_len, budget = setup["seq_len"], setup["budget"]
    rows = _decode_speedups(cost, seq_len, budget, setup["batch_sizes"])
    best_b = max(rows, key=lambda b: rows[b]["speedup"])
    speedup = rows[best_b]["speedup"]
    # end to end: an offline batch at SARATHI's optimal P:D = C / (B - 1) for the largest batch
    batch = max(setup["batch_sizes"])
    decode_len = round(seq_len / (1 + budget / (batch - 1)))
    prompt_len = seq_len - decode_len
    n = SARATHI_SCALES[ctx.scale]
    specs = [RequestSpec(tuple(range(i * seq_len, i * seq_len + prompt_len)), decode_len) for i in range(n)]
    policies = ("sarathi", "prefill_first", "orca")
    advance = ctx.track("SARATHI end-to-end (simulated)", len(policies))
    throughput = {}
    for policy in policies:
        config = default_config(policy, budget, batch, max_seq_len=seq_len)
        throughput[policy] = Simulator(cost, policy, config).run(specs).total_throughput
        advance(1)
    gain = throughput["sarathi"] / throughput["prefill_first"]
    held = speedup >= SARATHI_MIN_DECODE_SPEEDUP
    summary = (
        f"{setup['model']} on {cost.gpu.name}, {seq_len}-token sequences, budget {budget}: decode throughput "
        f"piggybacked on a prefill chunk vs decode-only batches "
        + ", ".join(f"B={b}: {r['speedup']:.1f}x" for b, r in rows.items())
        + f" (up to {speedup:.1f}x; held if >= {SARATHI_MIN_DECODE_SPEEDUP}x; paper up to 10x); end to end on "
        f"{n} requests of P:D {prompt_len}:{decode_len}, batch {batch}: sarathi {gain:.2f}x prefill_first, "
        f"{throughput['sarathi'] / throughput['orca']:.2f}x orca (reported; paper up to 1.33x)"
    )
    return ClaimPart(
        name="simulated",
        label=cost.label + " (A100-fitted efficiencies)" if cost.gpu.calibrated_as != cost.gpu.key else cost.label,
        held=held,
        summary=summary,
        metrics={
            "decode_speedup_max": speedup,
            "decode_speedup_best_batch": float(best_b),
            "e2e_gain_vs_prefill_first": gain,
            "e2e_gain_vs_orca": throughput["sarathi"] / throughput["orca"],
            **{f"{p}_tokens_per_s": t for p, t in throughput.items()},
        },
        # deterministic (a fixed workload on a cost model): one value whatever the seeds
        per_seed={"decode_speedup_max": [speedup], "e2e_gain_vs_prefill_first": [gain]},
        details={"setup": {**setup, "batch_sizes": list(setup["batch_sizes"])}, "per_batch": rows},
    )


def sarathi_claim(ctx: ClaimContext) -> ClaimOutcome:
    return combine_parts([simulated_piggyback_part(ctx)])


# ----------------------------------------------------------------------------------------------------- BatchLLM

BATCHLLM_SCALES = {"smoke": (8, 4), "quick": (64, 8), "full": (64, 8)}  # prefixes, suffixes per prefix
BATCHLLM_MIN_RATIO = 1.1
BATCHLLM_SETUP = {
    "model": "llama2-7b",
    "gpu": "a100",
    "prefix_len": 1000,
    "suffix_len": (100, 300),
    "output_len": (50, 150),
    "budget": 2048,
    "baseline_max_num_seqs": 128,
    "batchllm_max_num_seqs": 512,
}
BATCHLLM_CONTEXT = ("llama-13b", "a6000")  # a KV pool smaller than the shared prefixes (reported only)


def simulated_batch_part(ctx: ClaimContext) -> ClaimPart:
    """Offline shared-prefix batch: batchllm against sarathi_serve with LRU prefix caching in FCFS (shuffled) order."""
    from thrifty.serve.sched import SchedulerConfig
    from thrifty.serve.sim.cost_model import CostModel
    from thrifty.serve.sim.simulator import Simulator
    from thrifty.serve.sim.workloads import shared_prefix_batch, token_saving_ratio

    setup = BATCHLLM_SETUP
    prefixes, suffixes = BATCHLLM_SCALES[ctx.scale]
    cost = CostModel(setup["model"], setup["gpu"])
    policies = {
        "batchllm": SchedulerConfig(setup["budget"], setup["batchllm_max_num_seqs"]),
        "sarathi_serve": SchedulerConfig(setup["budget"], setup["baseline_max_num_seqs"]),
    }
    advance = ctx.track("BatchLLM offline batch (simulated)", len(policies) * len(ctx.seeds))
    runs: dict[str, list[dict]] = {p: [] for p in policies}
    ratios, theoretical = [], []
    for seed in ctx.seeds:
        specs = shared_prefix_batch(
            prefixes, setup["prefix_len"], suffixes, setup["suffix_len"], setup["output_len"], seed=seed
        )
        theoretical.append(token_saving_ratio(specs, block_size=16))
        prompt_tokens = sum(len(s.prompt_token_ids) for s in specs)
        for policy, config in policies.items():
            result = Simulator(cost, policy, config, enable_prefix_caching=policy == "sarathi_serve").run(specs)
            summary = result.summary()
            # tokens whose prefill was skipped: cache hits (LRU) or computed once for a whole group (BatchLLM)
            computed = int(result.batch_tokens.sum()) - int(result.output_tokens.sum()) + len(specs)
            summary["token_saving_ratio"] = 1.0 - computed / prompt_tokens
            runs[policy].append(summary)
            advance(1)
        ratios.append(
            runs["batchllm"][-1]["total_token_throughput"] / runs["sarathi_serve"][-1]["total_token_throughput"]
        )
    ratio = statistics.median(ratios)
    held = ratio >= BATCHLLM_MIN_RATIO
    # context (reported, not judged): the same batch where the KV pool cannot keep every prefix, so LRU evicts
    context_cost = CostModel(*BATCHLLM_CONTEXT)
    context = {}
    for policy, config in policies.items():
        sim = Simulator(context_cost, policy, config, enable_prefix_caching=policy == "sarathi_serve")
        context[policy] = sim.run(specs).summary()
    context_ratio = context["batchllm"]["total_token_throughput"] / context["sarathi_serve"]["total_token_throughput"]

    def med(policy: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[policy])

    summary = (
        f"{prefixes} prefixes x {setup['prefix_len']} tokens, {suffixes} suffixes each, shuffled, {setup['model']} on "
        f"one {cost.gpu.name}, budget {setup['budget']}: batchllm {med('batchllm', 'total_token_throughput'):.0f} "
        f"tok/s vs sarathi_serve + LRU prefix cache (FCFS) {med('sarathi_serve', 'total_token_throughput'):.0f} tok/s, "
        f"{ratio:.2f}x (median over {len(ratios)} seeds; held if >= {BATCHLLM_MIN_RATIO}x; paper 1.1-2x over vLLM); "
        f"token saving {med('batchllm', 'token_saving_ratio'):.1%} vs {med('sarathi_serve', 'token_saving_ratio'):.1%} "
        f"(theoretical {statistics.median(theoretical):.1%}); peak KV {med('batchllm', 'peak_kv_gib'):.1f} vs "
        f"{med('sarathi_serve', 'peak_kv_gib'):.1f} GiB. Context (reported, not judged): {context_cost.model.name} on "
        f"{context_cost.gpu.name} ({context_cost.label}), whose KV pool ({context['batchllm']['kv_blocks'] * 16} "
        f"tokens) cannot keep the {prefixes * setup['prefix_len']} prefix tokens: LRU hit rate "
        f"{context['sarathi_serve']['prefix_hit_rate']:.1%}, batchllm {context_ratio:.2f}x"
    )
    return ClaimPart(
        name="simulated",
        label=cost.label,
        held=held,
        summary=summary,
        metrics={
            "throughput_ratio": ratio,
            "theoretical_token_saving": statistics.median(theoretical),
            "context_throughput_ratio": context_ratio,
            "context_lru_hit_rate": context["sarathi_serve"]["prefix_hit_rate"],
            **{
                f"{p}_{k}": med(p, k)
                for p in policies
                for k in (
                    "total_token_throughput",
                    "makespan_s",
                    "token_saving_ratio",
                    "prefix_hit_rate",
                    "peak_kv_gib",
                )
            },
        },
        per_seed={"throughput_ratio": ratios, "theoretical_token_saving": theoretical},
        details={
            "setup": {**setup, "prefixes": prefixes, "suffixes_per_prefix": suffixes},
            "ratios": ratios,
            "runs": runs,
            "context": {"model": BATCHLLM_CONTEXT[0], "gpu": BATCHLLM_CONTEXT[1], "seed": ctx.seeds[-1], **context},
            "token_saving": "1 - prompt tokens computed / prompt tokens (LRU hits for sarathi_serve, one prefill per "
            "group for batchllm); theoretical: distinct prefix-tree tokens in whole 16-token blocks",
        },
    )


def batchllm_claim(ctx: ClaimContext) -> ClaimOutcome:
    return combine_parts([simulated_batch_part(ctx)])


register(
    Claim(
        key="sarathi_serve",
        statement="Our evaluation shows that Sarathi-Serve improves serving throughput within desired latency SLOs "
        "of Mistral-7B by up to 2.6x on a single A100 GPU and up to 6.9x for Falcon-180B on 8 A100 GPUs over Orca "
        "and vLLM.",
        measures="simulated (A100 cost model calibrated on Vidur's profiles): capacity of a Mistral-7B-class model "
        "on one A100 with conversation-trace lengths and Poisson arrivals, binary-searched under P99 TBT <= the strict "
        "SLO (5x the decode step at batch 32, 4k context) and P50 scheduling delay <= 2 s, sarathi_serve (budget "
        "512) against prefill_first (vLLM v0)",
        threshold=f"median over seeds of the capacity ratio >= {SARATHI_SERVE_MIN_RATIO}",
        run=sarathi_serve_claim,
        default=False,
    )
)

register(
    Claim(
        key="sarathi",
        statement="On LLaMA-13B model, SARATHI improves the decode throughput by up to 10x, and accelerates "
        "end-to-end throughput by up to 1.33x.",
        measures="simulated (A6000 cost model with A100-fitted efficiencies): decode tokens/s of B-1 decodes "
        "piggybacked on one prefill chunk (token budget 256, marginal time over the chunk alone) against "
        "decode-only batches, LLaMA-13B, 1k-token sequences, B in 6, 12, 18; end-to-end throughput of sarathi "
        "against prefill_first and orca on an offline batch at P:D = C/(B-1) (reported)",
        threshold=f"largest decode-throughput gain over the batch sizes >= {SARATHI_MIN_DECODE_SPEEDUP}",
        run=sarathi_claim,
        default=True,
    )
)

register(
    Claim(
        key="batchllm",
        statement="BatchLLM outperforms vLLM by 1.1x to 2x on a set of microbenchmarks and two typical industry "
        "workloads.",
        measures="simulated (A100 cost model): total tokens/s of an offline batch of 64 shared 1,000-token prefixes "
        "with 8 suffixes each (shuffled), Llama-2-7B, token budget 2048: batchllm (planned groups, prefix prefilled "
        "once, memory-centric admission) against sarathi_serve with LRU prefix caching in FCFS order; token-saving "
        "ratio and peak KV memory reported",
        threshold=f"median over seeds of the throughput ratio >= {BATCHLLM_MIN_RATIO}",
        run=batchllm_claim,
        default=False,
    )
)
