"""Engine speed on this CPU: decode tokens/s of ``thrifty.serve.LLMEngine`` against ``transformers``' ``generate``.

Both run the same weights (a ~22M-parameter random Llama saved as a Hugging Face checkpoint, or ``--model DIR``),
in float32, greedy, EOS ignored, on the same number of torch threads, in one process. Workload: prompts of
``--prompt-len`` random tokens, ``--new-tokens`` generated per request.

- batch 1: one request; ``LLMEngine`` vs ``LlamaForCausalLM.generate``.
- 32 concurrent requests: ``LLMEngine`` (continuous batching, sarathi_serve, budget 512) vs ``generate`` serving
  them one at a time (what a plain ``generate`` loop behind a server does), which is the judged baseline; a static
  padded-free batch of all 32 in one ``generate`` call is reported as context (not judged).

Decode tokens/s: tokens produced after the moment every request of the batch has its first token, divided by the time
from that moment to the last token (the prefill is excluded; token times come from a ``generate`` streamer and from
``LLMEngine.step``). One ``generate`` call at a time means the sequential baseline decodes at its batch-1 rate.
Targets, fixed before any run: >= 1x at batch 1 and >= 3x at 32 concurrent requests. Contenders run in interleaved
rounds (order alternating) and ratios are medians over rounds, because the machine may be shared.

    OMP_NUM_THREADS=1 python benchmarks/serve_speed.py --rounds 3 --out runs/serve_speed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

TARGET_BATCH1 = 1.0
TARGET_CONCURRENT = 3.0


def decode_rate(token_times: list[list[float]]) -> float:
    """Decode tokens/s from each request's token times: after all first tokens, tokens / elapsed."""
    start = max(ts[0] for ts in token_times)
    end = max(ts[-1] for ts in token_times)
    tokens = sum(sum(1 for t in ts if t > start) for ts in token_times)
    return tokens / (end - start)


def run_thrifty(model, prompts: list[list[int]], new_tokens: int, budget: int) -> list[list[float]]:
    from thrifty.serve.engine import LLMEngine
    from thrifty.serve.sampling import SamplingParams
    from thrifty.serve.sched import SchedulerConfig

    blocks = len(prompts) * -(-(len(prompts[0]) + new_tokens) // 16) + 8
    engine = LLMEngine(
        model,
        None,
        "sarathi_serve",
        SchedulerConfig(budget, max(len(prompts), 1)),
        num_blocks=blocks,
        enable_prefix_caching=False,
        clock=time.perf_counter,
    )
    params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    times = {engine.add_request(p, params): [] for p in prompts}
    while engine.has_unfinished():
        outputs = engine.step()
        now = time.perf_counter()
        for out in outputs:
            times[out.request_id].extend([now] * len(out.new_token_ids))
    assert all(len(ts) == new_tokens for ts in times.values())
    return list(times.values())


class _Timer:
    """A ``generate`` streamer recording when each step's tokens arrive (the first ``put`` is the prompt)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.seen_prompt = False

    def put(self, value) -> None:
        if self.seen_prompt:
            self.times.append(time.perf_counter())
        self.seen_prompt = True

    def end(self) -> None:
        pass


@torch.inference_mode()
def run_hf(hf_model, prompts: list[list[int]], new_tokens: int) -> list[list[float]]:
    ids = torch.tensor(prompts)
    timer = _Timer()
    out = hf_model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
        streamer=timer,
    )
    assert out.shape == (len(prompts), len(prompts[0]) + new_tokens) and len(timer.times) == new_tokens
    return [timer.times] * len(prompts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="local HF Llama checkpoint (default: a ~22M random Llama)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrent", type=int, default=32)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--budget", type=int, default=512)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/serve_speed.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import transformers

    from thrifty.serve.model.loader import load_llama, save_pretrained
    from thrifty.serve.model.testing import random_llama

    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or save_pretrained(random_llama(seed=args.seed), None, Path(tmp) / "ckpt")
        ours = load_llama(path)
        hf = transformers.LlamaForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(args.seed)
    vocab = ours.config.vocab_size
    prompts = torch.randint(1, vocab, (args.concurrent, args.prompt_len), generator=g).tolist()
    with torch.inference_mode():  # the same model in both
        x = torch.tensor(prompts[:2])
        gap = float((ours.forward_dense(x) - hf(x).logits).abs().max())
    if gap > 1e-4:
        raise SystemExit(f"the two models disagree (max logit difference {gap:.2e})")
    contenders = {
        "thrifty_batch1": lambda: run_thrifty(ours, prompts[:1], args.new_tokens, args.budget),
        "hf_batch1": lambda: run_hf(hf, prompts[:1], args.new_tokens),
        "thrifty_concurrent": lambda: run_thrifty(ours, prompts, args.new_tokens, args.budget),
        "hf_static_batch": lambda: run_hf(hf, prompts, args.new_tokens),
    }
    rates: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(args.rounds):
        order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
        for name in order:
            rates[name].append(decode_rate(contenders[name]()))
            print(f"round {r}: {name:20s} {rates[name][-1]:8.1f} decode tok/s", flush=True)
    batch1 = [t / h for t, h in zip(rates["thrifty_batch1"], rates["hf_batch1"], strict=True)]
    concurrent = [t / h for t, h in zip(rates["thrifty_concurrent"], rates["hf_batch1"], strict=True)]
    static = [t / h for t, h in zip(rates["thrifty_concurrent"], rates["hf_static_batch"], strict=True)]
    result = {
        "label": f"measured, CPU ({platform.machine()}, {args.threads} torch thread(s)); machine may be shared",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "python": sys.version},
        "params": sum(p.numel() for p in ours.parameters()),
        "config": vars(args),
        "decode_tokens_per_s": rates,
        "ratio_batch1": statistics.median(batch1),
        "ratio_concurrent_vs_sequential_generate": statistics.median(concurrent),
        "ratio_concurrent_vs_static_batch_generate": statistics.median(static),
        "per_round": {"batch1": batch1, "concurrent": concurrent, "static": static},
    }
    result["held_batch1"] = result["ratio_batch1"] >= TARGET_BATCH1
    result["held_concurrent"] = result["ratio_concurrent_vs_sequential_generate"] >= TARGET_CONCURRENT
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(
        f"{result['label']}, {result['params'] / 1e6:.1f}M params, median of {args.rounds} rounds:\n"
        f"  batch 1: thrifty {statistics.median(rates['thrifty_batch1']):.1f} vs generate "
        f"{statistics.median(rates['hf_batch1']):.1f} decode tok/s = {result['ratio_batch1']:.2f}x "
        f"({'held' if result['held_batch1'] else 'not held'}, target >= {TARGET_BATCH1}x)\n"
        f"  {args.concurrent} concurrent: thrifty {statistics.median(rates['thrifty_concurrent']):.1f} tok/s = "
        f"{result['ratio_concurrent_vs_sequential_generate']:.2f}x generate one at a time "
        f"({'held' if result['held_concurrent'] else 'not held'}, target >= {TARGET_CONCURRENT}x); "
        f"{result['ratio_concurrent_vs_static_batch_generate']:.2f}x one static generate batch "
        f"({statistics.median(rates['hf_static_batch']):.1f} tok/s, reported)\n"
        f"wrote {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
