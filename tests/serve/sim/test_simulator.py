"""The discrete-event loop: conservation of requests under every policy and a hand-computed two-request run."""

from __future__ import annotations

import numpy as np
import pytest

from thrifty.serve.sched import SCHEDULERS, SchedulerConfig
from thrifty.serve.sim.cost_model import CostModel
from thrifty.serve.sim.simulator import Simulator, default_config, kv_cache_blocks
from thrifty.serve.sim.workloads import RequestSpec


def test_kv_capacity_by_hand(linear_cost):
    blocks = kv_cache_blocks(CostModel("llama2-7b", "a100"))
    assert blocks == int((80 * 2**30 * 0.9 - 2 * 6_738_415_616) // (16 * 512 * 1024))
    with pytest.raises(ValueError, match="do not fit"):
        kv_cache_blocks(CostModel("llama2-70b", "a6000"))
    with pytest.raises(ValueError, match="unknown scheduler"):
        Simulator(linear_cost, "no_such_policy", num_blocks=8)


@pytest.mark.parametrize("policy", sorted(SCHEDULERS))
def test_every_request_finishes_with_all_its_tokens(policy, linear_cost):
    rng = np.random.default_rng(0)
    specs = [
        RequestSpec(tuple(rng.integers(1, 50, size=int(rng.integers(3, 40))).tolist()), int(rng.integers(1, 12)), t)
        for t in np.sort(rng.uniform(0, 5, size=24))
    ]
    config = default_config(policy, token_budget=32, max_num_seqs=8, max_seq_len=64)
    # a small pool forces preemptions for the policies that can preempt
    result = Simulator(linear_cost, policy, config, num_blocks=24, block_size=4, enable_prefix_caching=True).run(specs)
    assert result.num_requests == len(specs)
    assert sorted(result.output_tokens) == sorted(s.max_tokens for s in specs)
    assert result.tbt.size == sum(s.max_tokens - 1 for s in specs)
    assert np.all(result.ttft > 0) and np.all(result.scheduling_delay >= 0) and np.all(result.e2e >= result.ttft)
    assert result.peak_kv_blocks <= 24
    # every prompt token is computed at least once unless served from the prefix cache
    assert result.batch_tokens.sum() >= sum(len(s.prompt_token_ids) + s.max_tokens - 1 for s in specs) - (
        result.prefix_hits
    )


def test_two_requests_by_hand(linear_cost):
    """sarathi_serve, budget 4, blocks of 4: A (6 prompt tokens, 3 outputs) at t=0, B (2 tokens, 2 outputs) at 1.5.
    Steps (1 s + 10 ms per token): [A 4 prefill] -> 1.04; [A 2 prefill, samples] -> 2.06; B arrives;
    [A decode, B 2 prefill] -> 3.09; [A decode, B decode] -> 4.11, both finish."""
    specs = [RequestSpec((1, 2, 3, 4, 5, 6), 3, 0.0), RequestSpec((7, 8), 2, 1.5)]
    config = SchedulerConfig(max_num_batched_tokens=4, max_num_seqs=2)
    r = Simulator(linear_cost, "sarathi_serve", config, num_blocks=16, block_size=4).run(specs)
    np.testing.assert_allclose(r.batch_tokens, [4, 2, 3, 2])
    np.testing.assert_allclose(r.ttft, [2.06, 3.09 - 1.5])
    np.testing.assert_allclose(r.scheduling_delay, [0.0, 2.06 - 1.5])
    np.testing.assert_allclose(r.e2e, [4.11, 4.11 - 1.5])
    np.testing.assert_allclose(r.tpot, [(4.11 - 2.06) / 2, 4.11 - 3.09])
    np.testing.assert_allclose(np.sort(r.tbt), [1.02, 1.02, 1.03])
    assert r.makespan == pytest.approx(4.11) and r.num_steps == 4 and r.busy_time == pytest.approx(4.11)
    assert r.request_throughput == pytest.approx(2 / 4.11)
    assert r.total_throughput == pytest.approx((6 + 2 + 3 + 2) / 4.11)
    assert r.summary()["label"] == "synthetic cost model"


def test_on_step_sees_every_schedule_with_its_duration():
    specs = [RequestSpec(tuple(range(100 * i, 100 * i + 40)), 5) for i in range(3)]
    seen = []
    result = Simulator(CostModel("llama2-7b", "a100"), "sarathi_serve", SchedulerConfig(16, 4)).run(
        specs, on_step=lambda out, seconds: seen.append((out.num_prefill_tokens, out.num_decodes, seconds))
    )
    assert len(seen) == result.num_steps and sum(s for *_, s in seen) == pytest.approx(result.busy_time)
    assert sum(d for _, d, _ in seen) == sum(s.max_tokens - 1 for s in specs)  # the first token ends a prefill
    assert sum(p for p, _, _ in seen) == sum(len(s.prompt_token_ids) for s in specs)
