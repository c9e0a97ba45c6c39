"""A discrete-event simulator of one serving replica, driven by the real scheduler classes and a cost model.

Events as in Vidur (arXiv 2405.05465): request arrivals, a schedule decision whenever the replica is idle, and the
end of each batch. The loop is::

    now = 0
    while requests remain:
        hand every request with arrival_time <= now to the scheduler (add_request)
        out = scheduler.schedule(now)          # the same policy object the engine uses
        if out is empty: jump to the next arrival
        now += cost_model.batch_time(prefill chunks, decode contexts, sequences that sample)
        scheduler.update(out, one token for each sampling chunk, now=now)

The KV pool holds ``(memory * (1 - memory_margin) - weights) / (block_size * KV bytes per token)`` blocks
(Vidur's ``MemoryPlanner`` with its 10% margin for activations and workspace). Requests stop at their
``max_tokens`` (the trace's decode length, first token included, as Vidur's requests).

Metrics (Sarathi-Serve / Vidur definitions, seconds): TTFT = first token - arrival; TBT = gaps between a request's
consecutive tokens (``decode_token_execution_plus_preemption_time``, pooled over all tokens); TPOT = (finish -
first token) / (outputs - 1); end-to-end = finish - arrival; scheduling delay = first scheduled - arrival;
throughput over the makespan (first arrival to last finish); goodput = requests meeting the TTFT and TPOT SLOs per
second (vLLM's ``request_goodput``). Every figure is simulated and labelled with the GPU cost model.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thrifty.serve.kv.block_manager import BlockManager
from thrifty.serve.sched import SCHEDULERS, SchedulerConfig, SchedulerOutput, create_scheduler
from thrifty.serve.sequence import Request
from thrifty.serve.sim.cost_model import CostModel
from thrifty.serve.sim.workloads import RequestSpec

__all__ = [
    "SLO",
    "SimResult",
    "Simulator",
    "default_config",
    "kv_cache_blocks",
    "plot_tbt_cdfs",
]

_SAMPLED_TOKEN = 0


def default_config(
    policy: str, token_budget: int = 512, max_num_seqs: int = 128, max_seq_len: int = 8192
) -> SchedulerConfig:
    """A policy's configuration for a comparison: chunking policies get ``token_budget`` (Sarathi-Serve's chunk
    size, 512 for strict SLOs); whole-prompt policies get ``max_seq_len`` (vLLM's ``max_num_batched_tokens`` default,
    the model length; ``Scheduler.prefills_whole_prompts``), both with ``max_num_seqs`` (128, sarathi-serve's
    default)."""
    whole = policy in SCHEDULERS and SCHEDULERS[policy].prefills_whole_prompts  # unknown names fail in Simulator
    budget = max(token_budget, max_seq_len) if whole else token_budget
    return SchedulerConfig(max_num_batched_tokens=budget, max_num_seqs=max_num_seqs)


def kv_cache_blocks(cost_model: CostModel, block_size: int = 16, memory_margin: float = 0.1) -> int:
    """KV blocks that fit on the GPU: ``(memory * (1 - margin) - weights) / (block_size * KV bytes per token)``."""
    model, gpu = cost_model.model, cost_model.gpu
    free = gpu.memory_bytes * (1.0 - memory_margin) - model.weight_bytes()
    blocks = int(free // (block_size * model.kv_bytes_per_token()))
    if blocks < 1:
        raise ValueError(f"{model.name} weights do not fit on {gpu.name} with a {memory_margin:.0%} margin")
    return blocks


@dataclass(frozen=True)
class SLO:
    """Per-request service levels for goodput: TTFT and TPOT bounds in seconds."""

    ttft_s: float = 2.0
    tpot_s: float = 0.2


@dataclass
class SimResult:
    """Per-request timings and run totals of one simulation (simulated seconds, ``label`` names the hardware)."""

    label: str
    policy: str
    arrivals: np.ndarray
    ttft: np.ndarray
    tpot: np.ndarray
    e2e: np.ndarray
    scheduling_delay: np.ndarray
    tbt: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    makespan: float
    num_steps: int
    busy_time: float
    preemptions: int
    prefix_queries: int
    prefix_hits: int
    peak_kv_blocks: int
    num_kv_blocks: int
    block_size: int
    kv_bytes_per_token: int
    batch_tokens: np.ndarray = field(repr=False)
    slo: SLO = field(default_factory=SLO)

    @property
    def num_requests(self) -> int:
        return int(self.ttft.size)

    def quantile(self, name: str, q: float) -> float:
        values = getattr(self, name)
        return float(np.quantile(values, q)) if values.size else math.nan

    @property
    def request_throughput(self) -> float:
        return self.num_requests / self.makespan if self.makespan > 0 else math.nan

    @property
    def output_throughput(self) -> float:
        return float(self.output_tokens.sum()) / self.makespan if self.makespan > 0 else math.nan

    @property
    def total_throughput(self) -> float:
        """Prompt plus output tokens per second."""
        total = float(self.prompt_tokens.sum() + self.output_tokens.sum())
        return total / self.makespan if self.makespan > 0 else math.nan

    @property
    def goodput(self) -> float:
        ok = (self.ttft <= self.slo.ttft_s) & (np.nan_to_num(self.tpot, nan=0.0) <= self.slo.tpot_s)
        return float(ok.sum()) / self.makespan if self.makespan > 0 else math.nan

    @property
    def prefix_hit_rate(self) -> float:
        return self.prefix_hits / self.prefix_queries if self.prefix_queries else 0.0

    @property
    def peak_kv_bytes(self) -> float:
        return float(self.peak_kv_blocks * self.block_size * self.kv_bytes_per_token)

    def summary(self) -> dict[str, Any]:
        """Headline figures as plain floats (seconds, tokens/s, counts)."""
        return {
            "label": self.label,
            "policy": self.policy,
            "requests": self.num_requests,
            "makespan_s": self.makespan,
            "ttft_p50_s": self.quantile("ttft", 0.5),
            "ttft_p99_s": self.quantile("ttft", 0.99),
            "tbt_p50_s": self.quantile("tbt", 0.5),
            "tbt_p99_s": self.quantile("tbt", 0.99),
            "tpot_p50_s": self.quantile("tpot", 0.5),
            "e2e_p50_s": self.quantile("e2e", 0.5),
            "e2e_p99_s": self.quantile("e2e", 0.99),
            "scheduling_delay_p50_s": self.quantile("scheduling_delay", 0.5),
            "scheduling_delay_p99_s": self.quantile("scheduling_delay", 0.99),
            "request_throughput": self.request_throughput,
            "output_token_throughput": self.output_throughput,
            "total_token_throughput": self.total_throughput,
            "goodput": self.goodput,
            "goodput_slo": {"ttft_s": self.slo.ttft_s, "tpot_s": self.slo.tpot_s},
            "steps": self.num_steps,
            "mean_batch_tokens": float(self.batch_tokens.mean()) if self.batch_tokens.size else 0.0,
            "busy_fraction": self.busy_time / self.makespan if self.makespan > 0 else math.nan,
            "preemptions": self.preemptions,
            "prefix_hit_rate": self.prefix_hit_rate,
            "prefix_hit_tokens": self.prefix_hits,
            "peak_kv_blocks": self.peak_kv_blocks,
            "peak_kv_gib": self.peak_kv_bytes / 2**30,
            "kv_blocks": self.num_kv_blocks,
        }


class Simulator:
    """One replica: a cost model, a policy from ``thrifty.serve.sched`` and a ``BlockManager`` sized to the GPU.

    Args:
        cost_model: prices each step.
        policy: a name of ``thrifty.serve.sched.SCHEDULERS``.
        config: the policy's ``SchedulerConfig`` (default: its defaults, a 512-token budget, 128 sequences).
        num_blocks: KV blocks (default: what fits on the GPU, ``kv_cache_blocks``).
        block_size, enable_prefix_caching, watermark: passed to the ``BlockManager``.
        slo: goodput's per-request SLO.
    """

    def __init__(
        self,
        cost_model: CostModel,
        policy: str,
        config: SchedulerConfig | None = None,
        num_blocks: int | None = None,
        block_size: int = 16,
        enable_prefix_caching: bool = False,
        watermark: float = 0.01,
        slo: SLO | None = None,
    ) -> None:
        self.cost_model = cost_model
        self.policy = policy
        self.config = config if config is not None else SchedulerConfig()
        self.num_blocks = kv_cache_blocks(cost_model, block_size) if num_blocks is None else num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.watermark = watermark
        self.slo = slo if slo is not None else SLO()
        # fail early on an unknown policy or an inconsistent config
        create_scheduler(
            policy, BlockManager(self.num_blocks, block_size, enable_prefix_caching, watermark), self.config
        )

    def run(
        self, specs: Sequence[RequestSpec], on_step: Callable[[SchedulerOutput, float], None] | None = None
    ) -> SimResult:
        """Simulate ``specs`` to completion; every request finishes (none is lost). ``on_step(schedule, seconds)``,
        when given, sees each step's schedule and simulated duration before the scheduler applies it."""
        bm = BlockManager(self.num_blocks, self.block_size, self.enable_prefix_caching, self.watermark)
        scheduler = create_scheduler(self.policy, bm, self.config)
        order = sorted(range(len(specs)), key=lambda i: specs[i].arrival_time)
        requests = [
            Request(f"r{i}", list(specs[i].prompt_token_ids), specs[i].max_tokens, specs[i].arrival_time) for i in order
        ]
        pending = deque(requests)
        cost = self.cost_model
        now = requests[0].arrival_time if requests else 0.0
        start = now
        busy = 0.0
        steps = 0
        peak = 0
        batch_tokens: list[int] = []
        finished = 0
        while pending or scheduler.has_unfinished():
            while pending and pending[0].arrival_time <= now:
                scheduler.add_request(pending.popleft())
            out = scheduler.schedule(now)
            if not out.chunks:
                if pending:
                    now = max(now, pending[0].arrival_time)
                    continue
                raise RuntimeError(f"{self.policy} scheduled nothing with {scheduler.num_unfinished} requests left")
            prefills: list[tuple[int, int]] = []
            decodes: list[int] = []
            sampled: dict[str, int] = {}
            tokens = 0
            for chunk in out.chunks:
                if chunk.is_decode:
                    decodes.append(chunk.end)
                else:
                    prefills.append((chunk.num_tokens, chunk.start))
                if chunk.sample:
                    sampled[chunk.request.request_id] = _SAMPLED_TOKEN
                tokens += chunk.num_tokens
            peak = max(peak, bm.num_used_blocks)
            dt = cost.batch_time(prefills, decodes, len(sampled))
            now += dt
            busy += dt
            steps += 1
            batch_tokens.append(tokens)
            if on_step is not None:
                on_step(out, dt)
            finished += len(scheduler.update(out, sampled, now=now))
        if finished != len(requests):
            raise RuntimeError(f"{len(requests) - finished} of {len(requests)} requests did not finish")
        return self._result(requests, now - start, steps, busy, scheduler.num_preemptions, bm, peak, batch_tokens)

    def _result(self, requests, makespan, steps, busy, preemptions, bm, peak, batch_tokens) -> SimResult:
        arrivals = np.array([r.arrival_time for r in requests])
        first = np.array([r.first_token_time for r in requests])
        finish = np.array([r.finish_time for r in requests])
        outputs = np.array([r.num_output_tokens for r in requests])
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = np.where(outputs > 1, (finish - first) / np.maximum(outputs - 1, 1), np.nan)
        gaps = [np.diff(r.token_times) for r in requests if len(r.token_times) > 1]
        return SimResult(
            label=self.cost_model.label,
            policy=self.policy,
            arrivals=arrivals,
            ttft=first - arrivals,
            tpot=tpot,
            e2e=finish - arrivals,
            scheduling_delay=np.array([r.first_scheduled_time for r in requests]) - arrivals,
            tbt=np.concatenate(gaps) if gaps else np.zeros(0),
            prompt_tokens=np.array([r.num_prompt_tokens for r in requests]),
            output_tokens=outputs,
            makespan=makespan,
            num_steps=steps,
            busy_time=busy,
            preemptions=preemptions,
            prefix_queries=bm.prefix_queries,
            prefix_hits=bm.prefix_hits,
            peak_kv_blocks=peak,
            num_kv_blocks=self.num_blocks,
            block_size=self.block_size,
            kv_bytes_per_token=self.cost_model.model.kv_bytes_per_token(),
            batch_tokens=np.array(batch_tokens),
            slo=self.slo,
        )


def plot_tbt_cdfs(tbts: dict[str, np.ndarray], title: str, path: str | Path) -> Path | None:
    """Empirical CDFs of time between tokens per policy (log x axis, ms) saved as a PNG; ``None`` if all empty."""
    from thrifty._plotting import pyplot

    plt = pyplot()

    tbts = {k: v for k, v in tbts.items() if len(v)}
    if not tbts:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for policy, values in tbts.items():
        v = np.sort(values) * 1e3
        ax.plot(v, np.arange(1, v.size + 1) / v.size, label=policy)
    ax.set_xscale("log")
    ax.set_xlabel("time between tokens (ms)")
    ax.set_ylabel("fraction of tokens")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
