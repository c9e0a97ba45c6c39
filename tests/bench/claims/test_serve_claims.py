"""The serving claims: engines stepped in turn each run on their own step clock; at smoke scale the simulated claims
are labelled simulated with finite figures, the measured ones measured on CPU, and BatchLLM's realised token saving
lies between the LRU cache's and its plan's."""

from __future__ import annotations

import math

import pytest

from thrifty.bench.claim import ClaimContext
from thrifty.bench.claims import get_claim
from thrifty.bench.claims.serve.measured import SMOKE_MODEL, DrivenEngine, StepClock
from thrifty.serve import SchedulerConfig
from thrifty.serve.engine import LLMEngine
from thrifty.serve.model.testing import random_llama


def test_interleaved_engines_each_run_on_their_own_step_clock():
    model = random_llama(seed=1, **SMOKE_MODEL)
    # (prompt, max_tokens, arrival s): arrivals far apart, so that even on a loaded machine each request finds the
    # engine idle and the step counts do not depend on how long a step took
    requests = [([1 + i] * (5 + 7 * i), 3 + i, 30.0 * i) for i in range(4)]
    engines = {
        name: LLMEngine(model, None, policy, SchedulerConfig(budget, 8), num_blocks=32, clock=StepClock())
        for name, policy, budget in (("a", "sarathi_serve", 8), ("b", "prefill_first", 64))
    }
    runs = DrivenEngine.run_interleaved(engines, requests)
    for run in runs.values():
        for i, (_, max_tokens, arrival) in enumerate(requests):
            ts = run["times"][f"r{i}"]
            assert len(ts) == max_tokens and run["arrivals"][f"r{i}"] == arrival
            assert arrival < ts[0] and ts == sorted(ts)  # tokens come after the arrival, in order
        # the clock jumped over the idle time between arrivals
        assert run["makespan"] > requests[-1][2] and run["progress"][-1][2] == sum(r[1] for r in requests)
        assert 0 < run["peak_kv_usage"] <= 1
    assert runs["a"]["steps"] > runs["b"]["steps"]  # chunks of 8 tokens take more steps than whole prefills


@pytest.mark.slow
@pytest.mark.parametrize(
    ("key", "metric"),
    [
        ("sarathi", "decode_ratio_best"),
        ("batchllm", "throughput_ratio_mean"),
        ("sarathi_serve", "capacity_ratio_mean"),
    ],
)
def test_simulated_claims_are_labelled_simulated(key, metric):
    claim = get_claim(key)
    assert claim.field == "serve" and claim.default == (key == "sarathi")  # the seconds-long one is in the default
    outcome = claim.run(ClaimContext("smoke", [0, 1]))
    assert math.isfinite(outcome.metrics[metric]) and outcome.metrics[metric] > 0
    assert outcome.summary.startswith("[simulated") and "cost model" in outcome.details["label"]
    assert outcome.comparisons and not outcome.failures


@pytest.mark.slow
@pytest.mark.parametrize("key", ["sarathi_serve_cpu", "batchllm_cpu"])
def test_measured_claims_are_labelled_measured_on_cpu(key):
    claim = get_claim(key)
    assert claim.field == "serve" and not claim.default
    outcome = claim.run(ClaimContext("smoke", [0, 1]))
    assert outcome.comparisons and not outcome.failures
    assert outcome.summary.startswith("[measured, CPU") and outcome.details["label"].startswith("measured, CPU")
    assert all(math.isfinite(r) and r > 0 for r in outcome.per_seed["throughput_ratio"])
    if key == "batchllm_cpu":  # each prefix computed once per group: at least what the LRU cache saves
        saving = outcome.metrics["batchllm_token_saving_ratio"]
        assert 0 < saving <= outcome.metrics["batchllm_planned_token_saving_ratio"] + 1e-9
        assert saving >= outcome.metrics["sarathi_serve_token_saving_ratio"]
        assert outcome.metrics["batchllm_peak_kv_mib"] > 0
    else:
        assert all(0 < r < math.inf for r in outcome.per_seed["tbt_p99_ratio"])
