"""Capacity search: exact on a known threshold, monotone-consistent on a simulated synthetic deployment."""

from __future__ import annotations

import numpy as np
import pytest

from thrifty.serve.sim.capacity import SimulatedLoad, capacity_search, strict_tbt_slo
from thrifty.serve.sim.cost_model import CostModel
from thrifty.serve.sim.simulator import Simulator, default_config
from thrifty.serve.sim.workloads import RequestSpec


def test_finds_a_known_threshold():
    result = capacity_search(lambda qps: (0.01 * qps, 0.0), tbt_slo=0.05, start_qps=1.0, granularity=0.01)
    assert 5.0 * 0.99 <= result.capacity_qps <= 5.0
    assert result.lowest_failing_qps > 5.0
    assert all(p.under_slo == (p.qps <= 5.0) for p in result.probes)
    # the scheduling-delay SLO binds too
    result = capacity_search(lambda qps: (0.0, qps / 4), tbt_slo=1.0, delay_slo=2.0, start_qps=1.0)
    assert 8.0 * 0.98 <= result.capacity_qps <= 8.0
    assert capacity_search(lambda qps: (1.0, 0.0), tbt_slo=0.5, max_iterations=5).capacity_qps == 0.0
    with pytest.raises(ValueError):
        capacity_search(lambda qps: (0.0, 0.0), tbt_slo=0.0)


@pytest.mark.parametrize("policy", ["sarathi_serve", "prefill_first"])
def test_monotone_consistent_on_a_synthetic_cost_model(policy, linear_cost):
    rng = np.random.default_rng(0)
    gaps = rng.exponential(1.0, size=40)
    specs = [
        RequestSpec(tuple(range(int(rng.integers(8, 60)))), int(rng.integers(2, 10)), float(t)) for t in np.cumsum(gaps)
    ]
    config = default_config(policy, token_budget=32, max_num_seqs=16, max_seq_len=80)
    load = SimulatedLoad(Simulator(linear_cost, policy, config, num_blocks=200, block_size=8), specs)
    loose = capacity_search(load, tbt_slo=3.0, start_qps=0.2, max_iterations=10)
    strict = capacity_search(load, tbt_slo=1.5, start_qps=0.2, max_iterations=10)
    for result in (loose, strict):
        passing = [p.qps for p in result.probes if p.under_slo]
        assert passing and max(passing) == result.capacity_qps < result.lowest_failing_qps
        assert load.results[result.capacity_qps].quantile("tbt", 0.99) <= result.tbt_slo
    assert strict.capacity_qps <= loose.capacity_qps


def test_strict_slo_is_five_decode_steps():
    cost = CostModel("mistral-7b", "a100")
    assert strict_tbt_slo(cost) == pytest.approx(5 * cost.decode_iteration_time(32, 4096))
    assert 0.05 < strict_tbt_slo(cost) < 0.2  # the paper's strict SLO for Mistral-7B on an A100 is about 0.1 s
