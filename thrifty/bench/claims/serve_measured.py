"""Measured-on-CPU claims of the serving papers: the real engine (``thrifty.serve.engine.LLMEngine``) on this CPU.

- ``sarathi_serve_cpu``: Poisson arrivals of conversation-trace lengths (scaled down 4x), a ~22M-parameter random
  Llama: Sarathi-Serve's chunked prefills (token budget 128, the paper's 512 scaled like the prompts) against
  ``prefill_first`` (vLLM v0: whole prefills stall the running decodes): P99 time between tokens and throughput.
- ``batchllm_cpu``: an offline shared-prefix batch (8 prefixes x 256 tokens x 8 suffixes, shuffled; the
  simulated claim's 64 x 1,000 x 8 scaled down to fit this CPU): ``batchllm`` against ``sarathi_serve`` with LRU
  prefix caching in FCFS order; token saving and peak KV memory reported.

Every figure is a wall-clock measurement on this machine, labelled ``measured, CPU``. The two contenders are stepped
in turn (one engine step of A, one of B, the order alternating) and each engine's clock advances only by the wall time
of its own steps (jumping over idle time to the next arrival), so that load from other processes falls on both alike
at the granularity of one step; ratios are medians over seeds. (Whole runs alternated were not enough on a shared
machine: one baseline run took 172 s instead of 20 s for the same 47 steps during a load spike.) Weights are random
(timing does not depend on them); outputs ignore EOS so lengths are as drawn.
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

# ~22M parameters: big enough that a prefill chunk costs real time on a CPU core
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


class _StepClock:
    """An engine's clock that advances by the measured wall time of that engine's own steps (and jumps over idle
    time to the next arrival), so that engines stepped in turn each see only their own compute."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Driven:
    """One engine's run over ``requests``: per-request token times on its own clock, peak KV, progress."""

    def __init__(self, engine, requests: list[tuple[list[int], int, float]]) -> None:
        self.engine, self.requests = engine, requests
        self.order = sorted(range(len(requests)), key=lambda i: requests[i][2])
        self.nxt, self.generated, self.peak_blocks = 0, 0, 0
        self.times: dict[str, list[float]] = {}
        self.arrivals: dict[str, float] = {}
        self.progress: list[tuple[int, float, int]] = []  # (step, seconds, output tokens so far)

    @property
    def done(self) -> bool:
        return self.nxt == len(self.order) and not self.engine.has_unfinished()

    def step(self) -> None:
        """Admit what has arrived, then run one engine step (or jump the clock to the next arrival)."""
        from thrifty.serve.sampling import SamplingParams

        engine, clock = self.engine, self.engine.clock
        while self.nxt < len(self.order) and self.requests[self.order[self.nxt]][2] <= clock.now:
            i = self.order[self.nxt]
            prompt, max_tokens, arrival = self.requests[i]
            params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
            engine.add_request(prompt, params, request_id=f"r{i}", arrival_time=arrival)
            self.arrivals[f"r{i}"], self.times[f"r{i}"] = arrival, []
            self.nxt += 1
        if not engine.has_unfinished():
            if self.nxt < len(self.order):
                clock.now = max(clock.now, self.requests[self.order[self.nxt]][2])
            return
        start = time.perf_counter()
        outputs = engine.step()
        clock.now += time.perf_counter() - start
        self.peak_blocks = max(self.peak_blocks, engine.scheduler.block_manager.num_used_blocks)
        for out in outputs:
            self.times[out.request_id].extend([clock.now] * len(out.new_token_ids))
            self.generated += len(out.new_token_ids)
        self.progress.append((len(self.progress) + 1, clock.now, self.generated))

    def result(self) -> dict[str, Any]:
        every = max(1, len(self.progress) // 200)
        progress = self.progress[::every] + ([self.progress[-1]] if (len(self.progress) - 1) % every else [])
        end = max(ts[-1] for ts in self.times.values())
        return {
            "times": self.times,
            "arrivals": self.arrivals,
            "makespan": end,
            "peak_blocks": self.peak_blocks,
            "progress": progress,
            "steps": len(self.progress),
        }


def _run_interleaved(engines: dict[str, Any], requests: list[tuple[list[int], int, float]]) -> dict[str, dict]:
    """Run the same ``requests`` ``(prompt ids, max_tokens, arrival s)`` through every engine (each built with a
    ``_StepClock``), one step of each in turn (the order alternating), so that load from other processes falls on
    all of them alike. Each engine's times are its own clock's: the wall time of its steps, as if it ran alone."""
    runs = {name: _Driven(engine, requests) for name, engine in engines.items()}
    names, flip = list(runs), False
    while not all(r.done for r in runs.values()):
        for name in reversed(names) if flip else names:
            if not runs[name].done:
                runs[name].step()
        flip = not flip
    return {name: r.result() for name, r in runs.items()}


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
    for seed in ctx.seeds:
        specs = trace_requests(trace, n, 1.0, seed=seed, max_seq_len=setup["max_seq_len"], vocab=vocab)
        prompts = [list(s.prompt_token_ids[: max(1, round(len(s.prompt_token_ids) * scale))]) for s in specs]
        outputs = [max(2, round(s.max_tokens * scale)) for s in specs]
        mean_prompt = sum(map(len, prompts)) / len(prompts)
        rate = setup["utilisation"] * prefill_speed / mean_prompt
        requests = [(p, o, s.arrival_time / rate) for p, o, s in zip(prompts, outputs, specs, strict=True)]
        engines = {
            p: LLMEngine(model, None, p, c, enable_prefix_caching=False, clock=_StepClock()) for p, c in configs.items()
        }
        runs = _run_interleaved(engines, requests)
        for policy, run in runs.items():
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

    label = f"{cpu_label()}, load average {os.getloadavg()[0]:.1f} at the end"
    summary = (
        f"[{label}] {r['params'] / 1e6:.0f}M-parameter random Llama, {r['requests']} "
        f"requests of conv-trace lengths scaled 1/4, Poisson at {med('sarathi_serve', 'qps'):.2f} QPS (prefill "
        f"alone {SARATHI_SERVE_CPU_SETUP['utilisation']:.0%} busy): P99 TBT sarathi_serve (budget "
        f"{SARATHI_SERVE_CPU_SETUP['budget']}) {med('sarathi_serve', 'tbt_p99_s') * 1e3:.0f} ms vs prefill_first "
        f"{med('prefill_first', 'tbt_p99_s') * 1e3:.0f} ms, ratio {tbt:.2f} (held if <= "
        f"{SARATHI_SERVE_CPU_MAX_TBT_RATIO}); throughput {tput:.2f}x (held if >= "
        f"{SARATHI_SERVE_CPU_MIN_THROUGHPUT_RATIO}x); TTFT p50 {med('sarathi_serve', 'ttft_p50_s'):.2f} vs "
        f"{med('prefill_first', 'ttft_p50_s'):.2f} s (medians over {len(ctx.seeds)} seeds, steps interleaved)"
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
    for seed in ctx.seeds:
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
        engines = {
            p: LLMEngine(model, None, p, c, enable_prefix_caching=p == "sarathi_serve", clock=_StepClock())
            for p, c in policies.items()
        }
        runs = _run_interleaved(engines, requests)
        for policy, run in runs.items():
            engine = engines[policy]
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

    label = f"{cpu_label()}, load average {os.getloadavg()[0]:.1f} at the end"
    setup = BATCHLLM_CPU_SETUP
    summary = (
        f"[{label}] {r['params'] / 1e6:.0f}M-parameter random Llama, offline batch of "
        f"{r['prefixes']} prefixes x {setup['prefix_len']} tokens x {r['suffixes']} suffixes, shuffled, budget "
        f"{setup['budget']}: batchllm {med('batchllm', 'tokens_per_s'):.0f} tok/s vs sarathi_serve + LRU prefix cache "
        f"(FCFS) {med('sarathi_serve', 'tokens_per_s'):.0f} tok/s, {ratio:.2f}x (median over {len(ctx.seeds)} seeds, "
        f"steps interleaved; held if >= {BATCHLLM_CPU_MIN_RATIO}x); token saving "
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
        statement="Sarathi-Serve leverages chunked-prefills from Sarathi to create stall-free schedules that can add "
        "new requests in a batch without pausing ongoing decodes.",
        measures="measured on this CPU with the real engine (one torch thread, wall clock; the summary gives the load "
        "average): a "
        "~22M-parameter random Llama, conversation-trace lengths scaled 1/4, Poisson arrivals at a rate where prefill "
        "alone keeps the CPU half busy; P99 time between tokens and total tokens/s of sarathi_serve (budget 128) "
        "against prefill_first (vLLM v0), steps interleaved",
        threshold=f"median over seeds of P99 TBT ratio <= {SARATHI_SERVE_CPU_MAX_TBT_RATIO} and throughput ratio >= "
        f"{SARATHI_SERVE_CPU_MIN_THROUGHPUT_RATIO}",
        run=sarathi_serve_cpu_claim,
        default=False,
    )
)

register(
    Claim(
        key="batchllm_cpu",
        statement="BatchLLM outperforms vLLM by 1.1x to 2x on a set of microbenchmarks and two typical industry "
        "workloads.",
        measures="measured on this CPU with the real engine (one torch thread, wall clock; the summary gives the load "
        "average): total "
        "tokens/s of an offline batch of 8 shared 256-token prefixes x 8 suffixes (shuffled), ~22M-parameter random "
        "Llama, budget 512: batchllm against sarathi_serve with LRU prefix caching in FCFS order, steps interleaved; "
        "token-saving ratio and peak KV memory reported",
        threshold=f"median over seeds of the throughput ratio >= {BATCHLLM_CPU_MIN_RATIO}",
        run=batchllm_cpu_claim,
        default=False,
    )
)
