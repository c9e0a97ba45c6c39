"""Load test of ``thrifty serve``: a few hundred concurrent streaming completions on loopback.

Starts ``thrifty serve`` in a subprocess (the embedded model when installed, else a small random Llama with a byte
tokenizer saved to a temporary directory; or ``--model DIR``; or ``--url`` for a server already running), sends
``--requests`` streaming requests at once (``--concurrency`` caps how many are in flight), and checks that every one
completes with ``data: [DONE]`` and exactly ``max_tokens`` tokens, and that the server's /metrics agree (all finished,
none aborted, queues empty). Prints throughput and TTFT / TBT / end-to-end percentiles (measured by the client) and
writes them as JSON. Bounded: ``--timeout`` seconds in all.

    OMP_NUM_THREADS=1 python benchmarks/serve_load.py --requests 300 --out runs/serve_load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

WORDS = "def class return import self None True False for while if else elif try except with as yield lambda".split()


def percentiles(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {}
    a = np.asarray(xs)
    return {"mean": float(a.mean()), **{f"p{q}": float(np.percentile(a, q)) for q in (50, 90, 99)}}


async def one_request(client: httpx.AsyncClient, url: str, body: dict, sem: asyncio.Semaphore) -> dict:
    async with sem:
        start = time.perf_counter()
        events, done, usage, reason, status = [], False, None, None, None
        try:
            async with client.stream("POST", url + "/v1/completions", json=body) as r:
                status = r.status_code
                async for line in r.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[6:]
                    if data == "[DONE]":
                        done = True
                        break
                    chunk = json.loads(data)
                    if chunk.get("choices"):
                        events.append(time.perf_counter())
                        reason = chunk["choices"][0]["finish_reason"] or reason
                    if chunk.get("usage"):
                        usage = chunk["usage"]
        except httpx.HTTPError as exc:
            return {"ok": False, "error": repr(exc)}
        end = time.perf_counter()
        ok = status == 200 and done and usage is not None and usage["completion_tokens"] == body["max_tokens"]
        return {
            "ok": ok,
            "status": status,
            "finish_reason": reason,
            "tokens": usage["completion_tokens"] if usage else 0,
            "ttft": events[0] - start if events else None,
            "tbt": list(np.diff(events)) if len(events) > 1 else [],
            "e2e": end - start,
            "start": start,
            "end": end,
        }


def scrape(url: str) -> dict[str, float]:
    out = {}
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def run_load(url: str, args: argparse.Namespace) -> dict:
    rng = random.Random(args.seed)
    bodies = []
    for _ in range(args.requests):
        n_words = rng.randint(args.min_prompt_words, args.max_prompt_words)
        prompt = " ".join(rng.choice(WORDS) for _ in range(n_words))
        bodies.append(
            {
                "prompt": prompt,
                "max_tokens": rng.randint(args.min_tokens, args.max_tokens),
                "temperature": 0.8,
                "seed": rng.randrange(2**31),
                "stream": True,
                "stream_options": {"include_usage": True},
                "ignore_eos": True,
            }
        )
    sem = asyncio.Semaphore(args.concurrency or args.requests)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=httpx.Timeout(args.timeout), limits=limits) as client:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one_request(client, url, b, sem) for b in bodies))
        wall = time.perf_counter() - t0
    ok = [r for r in results if r["ok"]]
    tokens = sum(r["tokens"] for r in ok)
    return {
        "requests": args.requests,
        "completed": len(ok),
        "lost_or_failed": args.requests - len(ok),
        "failures": [r for r in results if not r["ok"]][:5],
        "wall_s": wall,
        "output_tokens": tokens,
        "output_tokens_per_s": tokens / wall,
        "requests_per_s": len(ok) / wall,
        "ttft_s": percentiles([r["ttft"] for r in ok if r["ttft"] is not None]),
        "tbt_s": percentiles([x for r in ok for x in r["tbt"]]),
        "e2e_s": percentiles([r["e2e"] for r in ok]),
    }


def start_server(args: argparse.Namespace, workdir: Path) -> tuple[subprocess.Popen, str]:
    from thrifty.serve.model.loader import DEFAULT_MODEL_DIR

    model = args.model
    if model is None and not (DEFAULT_MODEL_DIR / "config.json").is_file():
        from thrifty.serve.model.loader import save_pretrained
        from thrifty.serve.model.testing import byte_tokenizer, random_llama

        tok = byte_tokenizer()
        net = random_llama(
            seed=args.seed,
            vocab_size=tok.vocab_size,
            hidden_size=256,
            intermediate_size=704,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
        model = str(save_pretrained(net, tok, workdir / "random-byte-llama"))
        size = sum(p.numel() for p in net.parameters()) / 1e6
        print(f"the embedded model is not installed: serving a random {size:.1f}M-parameter Llama (byte tokenizer)")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "thrifty",
        "serve",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--scheduler",
        args.scheduler,
        "--max-num-seqs",
        str(args.max_num_seqs),
        "--budget",
        str(args.budget),
        "--threads",
        str(args.threads),
    ]
    if model is not None:
        cmd += ["--model", model]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"thrifty serve exited with status {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.terminate()
            raise SystemExit("thrifty serve did not come up within 120 s")
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default=None, help="a running server (default: start thrifty serve)")
    p.add_argument("--model", default=None, help="checkpoint for the started server")
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=0, help="requests in flight at once (0: all)")
    p.add_argument("--min-prompt-words", type=int, default=4)
    p.add_argument("--max-prompt-words", type=int, default=40)
    p.add_argument("--min-tokens", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--scheduler", default="sarathi_serve")
    p.add_argument("--budget", type=int, default=512)
    p.add_argument("--max-num-seqs", type=int, default=128)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--timeout", type=float, default=540.0, help="seconds for the whole load")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/serve_load.json")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        proc = None
        url = args.url
        if url is None:
            proc, url = start_server(args, Path(tmp))
        try:
            before = scrape(url)
            result = asyncio.run(asyncio.wait_for(run_load(url, args), args.timeout))
            time.sleep(0.5)
            after = scrape(url)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    finished = delta('thrifty_requests_finished_total{finish_reason="length"}') + delta(
        'thrifty_requests_finished_total{finish_reason="stop"}'
    )
    result["server"] = {
        "finished": finished,
        "aborted": delta("thrifty_requests_aborted_total"),
        "waiting_after": after.get("thrifty_num_requests_waiting"),
        "running_after": after.get("thrifty_num_requests_running"),
        "kv_usage_after": after.get("thrifty_kv_cache_usage_ratio"),
        "preemptions": delta("thrifty_num_preemptions_total"),
        "engine_steps": delta("thrifty_engine_steps_total"),
    }
    result["all_complete"] = (
        result["completed"] == args.requests
        and finished == args.requests
        and result["server"]["aborted"] == 0
        and result["server"]["waiting_after"] == 0
        and result["server"]["running_after"] == 0
    )
    result["label"] = "measured, CPU, loopback (client and server share the machine)"
    result["config"] = {k: v for k, v in vars(args).items() if k != "url"}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    ms = 1e3
    print(
        f"{result['completed']}/{args.requests} complete ({'none lost' if result['all_complete'] else 'LOST/FAILED'}), "
        f"{result['wall_s']:.1f} s: {result['output_tokens_per_s']:.0f} output tok/s, "
        f"{result['requests_per_s']:.2f} req/s; server: {finished:.0f} finished, "
        f"{result['server']['aborted']:.0f} aborted, {result['server']['preemptions']:.0f} preemptions"
    )
    for name in ("ttft_s", "tbt_s", "e2e_s"):
        s = result[name]
        print(f"  {name[:-2].upper():5s} ms: " + ", ".join(f"{k} {v * ms:.0f}" for k, v in s.items()))
    print(f"wrote {out}")
    return 0 if result["all_complete"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
