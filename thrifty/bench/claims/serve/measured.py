"""Running engines side by side on this CPU for the measured serving claims (``sarathi_serve_cpu``,
``batchllm_cpu``).

The contenders are stepped in turn, interleaved (one engine step of A, one of B, the order alternating), and each
engine's clock advances only by the wall time of its own steps (jumping over idle time to the next arrival), so that
load from other processes falls on both alike at the granularity of one step. (Whole runs alternated were not enough
on a shared machine: one baseline run took 172 s instead of 20 s for the same 47 steps during a load spike.) Weights
are random (timing does not depend on them: ``thrifty.serve.model.testing.random_llama``); outputs ignore EOS so
lengths are as drawn.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

from thrifty.bench.claim import Series

__all__ = ["SMOKE_MODEL", "DrivenEngine", "StepClock", "claim_model", "cpu_label", "percentile", "progress_series"]

# smoke scale (the tests) runs a ~0.5M-parameter model: it checks the machinery, not the claim; other scales run
# random_llama's default ~22M-parameter model, big enough that a prefill chunk costs real time on a CPU core
SMOKE_MODEL: dict[str, int] = {
    "vocab_size": 512,
    "hidden_size": 128,
    "intermediate_size": 352,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}

Requests = list[tuple[list[int], int, float]]  # (prompt token ids, max_tokens, arrival seconds)


def claim_model(scale: str):
    """The random Llama a measured claim runs at ``scale`` (seed 0: the same weights for every judged seed)."""
    from thrifty.serve.model.testing import random_llama

    return random_llama(seed=0, **(SMOKE_MODEL if scale == "smoke" else {}))


def cpu_label() -> str:
    import torch

    return f"measured, CPU ({platform.machine()}, {torch.get_num_threads()} torch thread(s), {os.cpu_count()} cores)"


class StepClock:
    """An engine's clock that advances by the measured wall time of that engine's own steps (and jumps over idle
    time to the next arrival), so that engines stepped in turn each see only their own compute."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class DrivenEngine:
    """One engine's run over ``requests``: per-request token times on its own ``StepClock``, peak KV blocks in use,
    progress (step, seconds, output tokens so far)."""

    def __init__(self, engine, requests: Requests) -> None:
        self.engine, self.requests = engine, requests
        self.order = sorted(range(len(requests)), key=lambda i: requests[i][2])
        self.nxt, self.generated, self.peak_kv_usage = 0, 0, 0.0
        self.times: dict[str, list[float]] = {}
        self.arrivals: dict[str, float] = {}
        self.progress: list[tuple[int, float, int]] = []

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
        self.peak_kv_usage = max(self.peak_kv_usage, engine.stats()["kv_usage"])
        for out in outputs:
            self.times[out.request_id].extend([clock.now] * len(out.new_token_ids))
            self.generated += len(out.new_token_ids)
        self.progress.append((len(self.progress) + 1, clock.now, self.generated))

    def result(self) -> dict[str, Any]:
        every = max(1, len(self.progress) // 200)
        progress = self.progress[::every] + ([self.progress[-1]] if (len(self.progress) - 1) % every else [])
        return {
            "times": self.times,
            "arrivals": self.arrivals,
            "makespan": max(ts[-1] for ts in self.times.values()),
            "peak_kv_usage": self.peak_kv_usage,
            "progress": progress,
            "steps": len(self.progress),
        }

    @staticmethod
    def run_interleaved(engines: dict[str, Any], requests: Requests) -> dict[str, dict[str, Any]]:
        """Run the same ``requests`` through every engine (each built with a ``StepClock``), one step of each in
        turn, the order alternating. Each engine's times are its own clock's: the wall time of its steps, as if it
        ran alone."""
        runs = {name: DrivenEngine(engine, requests) for name, engine in engines.items()}
        names, flip = list(runs), False
        while not all(r.done for r in runs.values()):
            for name in reversed(names) if flip else names:
                if not runs[name].done:
                    runs[name].step()
            flip = not flip
        return {name: r.result() for name, r in runs.items()}


def progress_series(runs: dict[str, list[list[tuple[int, float, int]]]]) -> list[Series]:
    """Output tokens generated so far against engine steps and wall-clock seconds, one series per policy."""
    series = []
    for policy, per_seed in runs.items():
        s = Series(label=policy, metric="output_tokens")
        for progress in per_seed:
            s.add([p[0] for p in progress], [p[1] for p in progress], [p[2] for p in progress])
        series.append(s)
    return series


def percentile(xs: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")
