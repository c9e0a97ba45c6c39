"""Measured-on-CPU claims of the serving papers: the real engine (``thrifty.serve.engine.LLMEngine``) on this CPU.

- ``sarathi_serve_cpu``: Poisson arrivals of conversation-trace lengths (scaled down 4x), a ~23M-parameter random
  Llama: Sarathi-Serve's chunked prefills (token budget 128, the paper's 512 scaled like the prompts) against
  ``prefill_first`` (vLLM v0: whole prefills stall the running decodes): P99 time between tokens and throughput.
- ``batchllm_cpu``: an offline shared-prefix batch (16 prefixes x 256 tokens x 8 suffixes, shuffled; the
  simulated claim's 64 x 1,000 x 8 scaled down to fit this CPU): ``batchllm`` against ``sarathi_serve`` with LRU
  prefix caching in FCFS order; token saving and peak KV memory reported.

Every figure is a wall-clock measurement on this machine, labelled ``measured, CPU``. The two contenders run in
alternating rounds (A, B, A, B, ...) so that load from other processes hits both alike; ratios are medians over
rounds. Weights are random (timing does not depend on them); outputs ignore EOS so lengths are as drawn.
The helpers ``random_llama``, ``byte_tokenizer`` and ``save_checkpoint`` are shared with ``benchmarks/serve_*.py``.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import time
from pathlib import Path
from typing import Any

from thrifty.bench.claim import HELD, NOT_HELD, Claim, ClaimContext, ClaimOutcome, Series
from thrifty.bench.claims import register

__all__ = ["MEASURED_MODEL", "byte_tokenizer", "cpu_label", "random_llama", "save_checkpoint"]

# ~23M parameters: big enough that a prefill chunk costs real time on a CPU core
MEASURED_MODEL: dict[str, int] = {
    "vocab_size": 4096,
    "hidden_size": 512,
    "intermediate_size": 1408,
    "num_hidden_layers": 6,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "max_position_embeddings": 2048,
}

# smoke scale (the tests) runs a ~0.5M-parameter model: it checks the machinery, not the claim
SMOKE_MODEL: dict[str, int] = {
    "vocab_size": 512,
    "hidden_size": 128,
    "intermediate_size": 352,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


def _claim_model(scale: str):
    return random_llama(seed=0, **(SMOKE_MODEL if scale == "smoke" else {}))


def cpu_label() -> str:
    import torch

    return f"measured, CPU ({platform.machine()}, {torch.get_num_threads()} torch thread(s), {os.cpu_count()} cores)"


def random_llama(seed: int = 0, **overrides: Any):
    """A randomly initialised :class:`~thrifty.serve.model.llama.LlamaForCausalLM` (Hugging Face's init: normal
    weights with std 0.02, unit norms) of ``MEASURED_MODEL`` updated with ``overrides``, float32, eval mode."""
    import torch

    from thrifty.serve.model.llama import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**{**MEASURED_MODEL, "eos_token_id": 0, "bos_token_id": None, **overrides})
    gen = torch.Generator().manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return model.eval().requires_grad_(False)


def byte_tokenizer():
    """A byte-level tokenizer without merges: ``<eos>`` is id 0, byte ``b`` is id ``b + 1`` (vocab 257)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from thrifty.serve.model.loader import TextTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet(), key=lambda ch: _BYTE_OF[ch])
    vocab = {"<eos>": 0, **{ch: i + 1 for i, ch in enumerate(alphabet)}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<eos>"])
    return TextTokenizer(tok, eos_token_ids=[0])


def _bytes_to_unicode() -> dict[str, int]:
    """GPT-2's byte -> printable character map, inverted (character -> byte)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


_BYTE_OF = _bytes_to_unicode()


def save_checkpoint(model, tokenizer, path: str | Path) -> Path:
    """Write ``model`` (and ``tokenizer``, when given) as a Hugging Face Llama directory loadable by
    ``thrifty serve --model`` and ``transformers``."""
    from safetensors.torch import save_file

    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(model.config.to_dict(), indent=1))
    save_file({k: v.contiguous() for k, v in model.hf_state_dict().items()}, str(d / "model.safetensors"))
    if tokenizer is not None:
        tokenizer.tokenizer.save(str(d / "tokenizer.json"))
    return d


# ------------------------------------------------------------------------------------------------------- runs


def _token_ids(n: int, rng: random.Random, vocab: int) -> list[int]:
    return [rng.randrange(1, vocab) for _ in range(n)]


def _run_engine(engine, requests: list[tuple[list[int], int, float]]) -> dict[str, Any]:
    """Drive ``engine`` in real time: request ``(prompt ids, max_tokens, arrival offset s)`` is added once its
    arrival passes. Returns per-request token times (when ``step`` returned them), arrivals, makespan and peak KV."""
    from thrifty.serve.sampling import SamplingParams

    order = sorted(range(len(requests)), key=lambda i: requests[i][2])
    bm = engine.scheduler.block_manager
    times: dict[str, list[float]] = {}
    arrivals: dict[str, float] = {}
    peak_blocks, nxt, generated = 0, 0, 0
    progress: list[tuple[int, float, int]] = []  # (step, seconds, output tokens so far)
    t0 = engine.clock()
    while nxt < len(order) or engine.has_unfinished():
        now = engine.clock()
        while nxt < len(order) and t0 + requests[order[nxt]][2] <= now:
            prompt, max_tokens, offset = requests[order[nxt]]
            rid = f"r{order[nxt]}"
            params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
            engine.add_request(prompt, params, request_id=rid, arrival_time=t0 + offset)
            arrivals[rid], times[rid] = t0 + offset, []
            nxt += 1
        if not engine.has_unfinished():
            time.sleep(max(0.0, min(0.005, t0 + requests[order[nxt]][2] - engine.clock())))
            continue
        outputs = engine.step()
        t = engine.clock()
        peak_blocks = max(peak_blocks, bm.num_used_blocks)
        for out in outputs:
            times[out.request_id].extend([t] * len(out.new_token_ids))
            generated += len(out.new_token_ids)
        progress.append((len(progress) + 1, t - t0, generated))
    end = max(ts[-1] for ts in times.values())
    every = max(1, len(progress) // 200)
    progress = progress[::every] + ([progress[-1]] if (len(progress) - 1) % every else [])
    return {
        "times": times,
        "arrivals": arrivals,
        "makespan": end - t0,
        "peak_blocks": peak_blocks,
        "progress": progress,
    }


def _progress_series(runs: dict[str, list[list[tuple[int, float, int]]]]) -> list[Series]:
    """Output tokens generated so far against engine steps and wall-clock seconds, one series per policy."""
    series = []
    for policy, per_seed in runs.items():
        s = Series(label=policy, metric="output_tokens")
        for progress in per_seed:
            s.add([p[0] for p in progress], [p[1] for p in progress], [p[2] for p in progress])
        series.append(s)
    return series


def _percentile(xs: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def _kv_block_bytes(model, block_size: int = 16) -> int:
    c = model.config
    return 2 * c.num_hidden_layers * block_size * c.num_key_value_heads * c.head_dim * model.dtype.itemsize


# --------------------------------------------------------------------------------------------- Sarathi-Serve CPU

SARATHI_SERVE_CPU_SCALES = {"smoke": 6, "quick": 16, "full": 64}  # requests per run
SARATHI_SERVE_CPU_MAX_TBT_RATIO = 0.5  # P99 TBT of sarathi_serve at most half of prefill_first's
SARATHI_SERVE_CPU_MIN_THROUGHPUT_RATIO = 0.9
SARATHI_SERVE_CPU_SETUP = {
    "trace": "conv",
    "length_scale": 0.25,  # prompt and output lengths (and the token budget, 512 -> 128) scaled down 4x
    "max_seq_len": 4096,  # before scaling
    "budget": 128,
    "max_num_seqs": 128,
    "utilisation": 0.5,  # Poisson rate: prefill alone would keep the CPU busy half of the time
}


def _prefill_tokens_per_s(model, budget: int) -> float:
    """Measured prefill speed: one ``budget``-token chunk through the engine (best of 3)."""
    from thrifty.serve.engine import LLMEngine
    from thrifty.serve.sampling import SamplingParams
    from thrifty.serve.sched import SchedulerConfig

    best = float("inf")
    for i in range(3):
        engine = LLMEngine(model, None, "sarathi_serve", SchedulerConfig(budget, 1), num_blocks=64)
        engine.add_request(list(range(1 + i, budget + 1 + i)), SamplingParams(max_tokens=1, temperature=0.0))
        start = time.perf_counter()
        while engine.has_unfinished():
            engine.step()
        best = min(best, time.perf_counter() - start)
    return budget / best


def measured_stall_part(ctx: ClaimContext) -> dict[str, Any]:
    """Sarathi-Serve vs prefill_first on this CPU at one Poisson load; see the module docstring."""
    import torch

    from thrifty.serve.engine import LLMEngine
    from thrifty.serve.sched import SchedulerConfig
    from thrifty.serve.sim.workloads import load_trace, trace_requests

    torch.set_num_threads(1)
    setup = SARATHI_SERVE_CPU_SETUP
    n = SARATHI_SERVE_CPU_SCALES[ctx.scale]
    model = _claim_model(ctx.scale)
    trace = load_trace(setup["trace"])
    vocab = model.config.vocab_size
    scale = setup["length_scale"]
    prefill_speed = _prefill_tokens_per_s(model, setup["budget"])
    configs = {
        "sarathi_serve": SchedulerConfig(setup["budget"], setup["max_num_seqs"]),
        "prefill_first": SchedulerConfig(model.config.max_position_embeddings, setup["max_num_seqs"]),
    }
    advance = ctx.track("Sarathi-Serve vs prefill_first (measured, CPU)", len(ctx.seeds) * len(configs))
    rows: dict[str, list[dict[str, float]]] = {p: [] for p in configs}
    progress: dict[str, list] = {p: [] for p in configs}
    for k, seed in enumerate(ctx.seeds):
        specs = trace_requests(trace, n, 1.0, seed=seed, max_seq_len=setup["max_seq_len"], vocab=vocab)
        prompts = [list(s.prompt_token_ids[: max(1, round(len(s.prompt_token_ids) * scale))]) for s in specs]
        outputs = [max(2, round(s.max_tokens * scale)) for s in specs]
        mean_prompt = sum(map(len, prompts)) / len(prompts)
        rate = setup["utilisation"] * prefill_speed / mean_prompt
        requests = [(p, o, s.arrival_time / rate) for p, o, s in zip(prompts, outputs, specs, strict=True)]
        order = list(configs) if k % 2 == 0 else list(reversed(configs))  # alternate who runs first
        for policy in order:
            engine = LLMEngine(
                model, None, policy, configs[policy], enable_prefix_caching=False, clock=time.perf_counter
            )
            run = _run_engine(engine, requests)
            progress[policy].append(run["progress"])
            tbts = [b - a for ts in run["times"].values() for a, b in zip(ts, ts[1:], strict=False)]
            ttfts = [ts[0] - run["arrivals"][r] for r, ts in run["times"].items()]
            tokens = sum(map(len, prompts)) + sum(outputs)
            rows[policy].append(
                {
                    "seed": seed,
                    "qps": rate,
                    "tbt_p99_s": _percentile(tbts, 99),
                    "tbt_p50_s": _percentile(tbts, 50),
                    "ttft_p50_s": _percentile(ttfts, 50),
                    "ttft_p99_s": _percentile(ttfts, 99),
                    "makespan_s": run["makespan"],
                    "tokens_per_s": tokens / run["makespan"],
                }
            )
            advance(1)
    tbt_ratios = [
        s["tbt_p99_s"] / p["tbt_p99_s"] for s, p in zip(rows["sarathi_serve"], rows["prefill_first"], strict=True)
    ]
    tput_ratios = [
        s["tokens_per_s"] / p["tokens_per_s"] for s, p in zip(rows["sarathi_serve"], rows["prefill_first"], strict=True)
    ]
    return {
        "rows": rows,
        "tbt_ratios": tbt_ratios,
        "tput_ratios": tput_ratios,
        "prefill_speed": prefill_speed,
        "progress": progress,
        "requests": n,
        "params": sum(p.numel() for p in model.parameters()),
    }


def sarathi_serve_cpu_claim(ctx: ClaimContext) -> ClaimOutcome:
    r = measured_stall_part(ctx)
    tbt, tput = statistics.median(r["tbt_ratios"]), statistics.median(r["tput_ratios"])
    held = tbt <= SARATHI_SERVE_CPU_MAX_TBT_RATIO and tput >= SARATHI_SERVE_CPU_MIN_THROUGHPUT_RATIO
    rows = r["rows"]

    def med(policy: str, key: str) -> float:
        return statistics.median(x[key] for x in rows[policy])

    label = cpu_label()
    summary = (
        f"[{label}; machine shared with other jobs] {r['params'] / 1e6:.0f}M-parameter random Llama, {r['requests']} "
        f"requests of conv-trace lengths scaled 1/4, Poisson at {med('sarathi_serve', 'qps'):.2f} QPS (prefill "
        f"alone {SARATHI_SERVE_CPU_SETUP['utilisation']:.0%} busy): P99 TBT sarathi_serve (budget "
        f"{SARATHI_SERVE_CPU_SETUP['budget']}) {med('sarathi_serve', 'tbt_p99_s') * 1e3:.0f} ms vs prefill_first "
        f"{med('prefill_first', 'tbt_p99_s') * 1e3:.0f} ms, ratio {tbt:.2f} (held if <= "
        f"{SARATHI_SERVE_CPU_MAX_TBT_RATIO}); throughput {tput:.2f}x (held if >= "
        f"{SARATHI_SERVE_CPU_MIN_THROUGHPUT_RATIO}x); TTFT p50 {med('sarathi_serve', 'ttft_p50_s'):.2f} vs "
        f"{med('prefill_first', 'ttft_p50_s'):.2f} s (medians over {len(ctx.seeds)} seeds, runs alternated)"
    )
    metrics = {
        "tbt_p99_ratio": tbt,
        "throughput_ratio": tput,
        "prefill_tokens_per_s": r["prefill_speed"],
        **{f"{p}_{k}": med(p, k) for p in rows for k in ("tbt_p99_s", "tbt_p50_s", "ttft_p50_s", "tokens_per_s")},
    }
    return ClaimOutcome(
        HELD if held else NOT_HELD,
        summary,
        metrics=metrics,
        per_seed={"tbt_p99_ratio": r["tbt_ratios"], "throughput_ratio": r["tput_ratios"]},
        series=_progress_series(r["progress"]),
        details={"label": label, "setup": SARATHI_SERVE_CPU_SETUP, "runs": rows},
    )


# -------------------------------------------------------------------------------------------------- BatchLLM CPU

BATCHLLM_CPU_SCALES = {"smoke": (2, 3), "quick": (8, 8), "full": (64, 8)}  # prefixes, suffixes per prefix
BATCHLLM_CPU_MIN_RATIO = 1.1
BATCHLLM_CPU_SETUP = {
    "prefix_len": 256,  # the simulated claim's 1,000 / 100-300 / 50-150 scaled down 4x
    "suffix_len": (25, 75),
    "output_len": (12, 38),
    "budget": 512,  # 2048 / 4
    "baseline_max_num_seqs": 128,
    "batchllm_max_num_seqs": 512,
}


def measured_batch_part(ctx: ClaimContext) -> dict[str, Any]:
    import torch

    from thrifty.serve.engine import LLMEngine
    from thrifty.serve.sched import SchedulerConfig

    torch.set_num_threads(1)
    setup = BATCHLLM_CPU_SETUP
    prefixes, suffixes = BATCHLLM_CPU_SCALES[ctx.scale]
    model = _claim_model(ctx.scale)
    vocab = model.config.vocab_size
    block_mib = _kv_block_bytes(model) / 2**20
    policies = {
        "batchllm": SchedulerConfig(setup["budget"], setup["batchllm_max_num_seqs"]),
        "sarathi_serve": SchedulerConfig(setup["budget"], setup["baseline_max_num_seqs"]),
    }
    advance = ctx.track("BatchLLM vs sarathi_serve + LRU (measured, CPU)", len(ctx.seeds) * len(policies))
    rows: dict[str, list[dict[str, float]]] = {p: [] for p in policies}
    progress: dict[str, list] = {p: [] for p in policies}
    for k, seed in enumerate(ctx.seeds):
        rng = random.Random(seed)
        requests = []
        for _ in range(prefixes):
            prefix = _token_ids(setup["prefix_len"], rng, vocab)
            for _ in range(suffixes):
                suffix = _token_ids(rng.randint(*setup["suffix_len"]), rng, vocab)
                requests.append((prefix + suffix, rng.randint(*setup["output_len"]), 0.0))
        rng.shuffle(requests)
        prompt_tokens = sum(len(p) for p, _, _ in requests)
        tokens = prompt_tokens + sum(o for _, o, _ in requests)
        order = list(policies) if k % 2 == 0 else list(reversed(policies))
        for policy in order:
            engine = LLMEngine(
                model,
                None,
                policy,
                policies[policy],
                enable_prefix_caching=policy == "sarathi_serve",
                clock=time.perf_counter,
            )
            run = _run_engine(engine, requests)
            progress[policy].append(run["progress"])
            sched, bm = engine.scheduler, engine.scheduler.block_manager
            if policy == "batchllm":
                saved = sched.realized_saved_tokens
                planned = sched.token_saving_ratio
            else:
                saved, planned = bm.prefix_hits, float("nan")
            rows[policy].append(
                {
                    "seed": seed,
                    "tokens_per_s": tokens / run["makespan"],
                    "makespan_s": run["makespan"],
                    "token_saving_ratio": saved / prompt_tokens,
                    "planned_token_saving_ratio": planned,
                    "peak_kv_mib": run["peak_blocks"] * block_mib,
                }
            )
            advance(1)
    ratios = [
        b["tokens_per_s"] / s["tokens_per_s"] for b, s in zip(rows["batchllm"], rows["sarathi_serve"], strict=True)
    ]
    return {
        "rows": rows,
        "ratios": ratios,
        "prefixes": prefixes,
        "suffixes": suffixes,
        "progress": progress,
        "params": sum(p.numel() for p in model.parameters()),
    }


def batchllm_cpu_claim(ctx: ClaimContext) -> ClaimOutcome:
    r = measured_batch_part(ctx)
    ratio = statistics.median(r["ratios"])
    held = ratio >= BATCHLLM_CPU_MIN_RATIO
    rows = r["rows"]

    def med(policy: str, key: str) -> float:
        return statistics.median(x[key] for x in rows[policy])

    label = cpu_label()
    setup = BATCHLLM_CPU_SETUP
    summary = (
        f"[{label}; machine shared with other jobs] {r['params'] / 1e6:.0f}M-parameter random Llama, offline batch of "
        f"{r['prefixes']} prefixes x {setup['prefix_len']} tokens x {r['suffixes']} suffixes, shuffled, budget "
        f"{setup['budget']}: batchllm {med('batchllm', 'tokens_per_s'):.0f} tok/s vs sarathi_serve + LRU prefix cache "
        f"(FCFS) {med('sarathi_serve', 'tokens_per_s'):.0f} tok/s, {ratio:.2f}x (median over {len(ctx.seeds)} seeds, "
        f"runs alternated; held if >= {BATCHLLM_CPU_MIN_RATIO}x); token saving "
        f"{med('batchllm', 'token_saving_ratio'):.1%} vs {med('sarathi_serve', 'token_saving_ratio'):.1%}; "
        f"peak KV {med('batchllm', 'peak_kv_mib'):.0f} vs {med('sarathi_serve', 'peak_kv_mib'):.0f} MiB"
    )
    metrics = {
        "throughput_ratio": ratio,
        **{
            f"{p}_{k}": med(p, k)
            for p in rows
            for k in ("tokens_per_s", "makespan_s", "token_saving_ratio", "peak_kv_mib")
        },
        "batchllm_planned_token_saving_ratio": med("batchllm", "planned_token_saving_ratio"),
    }
    return ClaimOutcome(
        HELD if held else NOT_HELD,
        summary,
        metrics=metrics,
        per_seed={"throughput_ratio": r["ratios"]},
        series=_progress_series(r["progress"]),
        details={
            "label": label,
            "setup": {**setup, "prefixes": r["prefixes"], "suffixes": r["suffixes"]},
            "runs": rows,
            "token_saving": "prompt tokens not computed / prompt tokens (LRU hits for "
            "sarathi_serve; realized group sharing for batchllm)",
        },
    )


register(
    Claim(
        key="sarathi_serve_cpu",
        paper="Taming Throughput-Latency Tradeoff in LLM Inference with Sarathi-Serve (arXiv 2403.02310)",
        field="serve",
        statement="Sarathi-Serve leverages chunked-prefills from Sarathi to create stall-free schedules that can add "
        "new requests in a batch without pausing ongoing decodes.",
        measures="measured on this CPU with the real engine (one torch thread, wall clock, machine shared): a "
        "~22M-parameter random Llama, conversation-trace lengths scaled 1/4, Poisson arrivals at a rate where prefill "
        "alone keeps the CPU half busy; P99 time between tokens and total tokens/s of sarathi_serve (budget 128) "
        "against prefill_first (vLLM v0), runs alternated",
        threshold=f"median over seeds of P99 TBT ratio <= {SARATHI_SERVE_CPU_MAX_TBT_RATIO} and throughput ratio >= "
        f"{SARATHI_SERVE_CPU_MIN_THROUGHPUT_RATIO}",
        run=sarathi_serve_cpu_claim,
        default=False,
    )
)

register(
    Claim(
        key="batchllm_cpu",
        paper="BatchLLM: Optimizing Large Batched LLM Inference with Global Prefix Sharing and Throughput-oriented "
        "Token Batching (arXiv 2412.03594)",
        field="serve",
        statement="BatchLLM outperforms vLLM by 1.1x to 2x on a set of microbenchmarks and two typical industry "
        "workloads.",
        measures="measured on this CPU with the real engine (one torch thread, wall clock, machine shared): total "
        "tokens/s of an offline batch of 8 shared 256-token prefixes x 8 suffixes (shuffled), ~22M-parameter random "
        "Llama, budget 512: batchllm against sarathi_serve with LRU prefix caching in FCFS order, runs alternated; "
        "token-saving ratio and peak KV memory reported",
        threshold=f"median over seeds of the throughput ratio >= {BATCHLLM_CPU_MIN_RATIO}",
        run=batchllm_cpu_claim,
        default=False,
    )
)
