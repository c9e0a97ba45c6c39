"""Traces, arrival processes and shared-prefix batches of the simulator."""

from __future__ import annotations

import numpy as np
import pytest

from thrifty.serve.sim.workloads import (
    gamma_arrivals,
    load_trace,
    poisson_arrivals,
    shared_prefix_batch,
    token_saving_ratio,
    trace_requests,
)


def test_arrival_processes_have_the_requested_rate_and_burstiness():
    rng = np.random.default_rng(0)
    gaps = np.diff(poisson_arrivals(4.0, 40_000, rng), prepend=0.0)
    assert gaps.mean() == pytest.approx(0.25, rel=0.02)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.03)
    gaps = np.diff(gamma_arrivals(2.0, 40_000, rng, cv=3.0), prepend=0.0)
    assert gaps.mean() == pytest.approx(0.5, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(3.0, rel=0.08)
    with pytest.raises(ValueError):
        poisson_arrivals(0.0, 3, rng)


def test_trace_csv_sampling_and_common_random_numbers(tmp_path):
    path = tmp_path / "t.csv"
    rows = [(0.5 * i, 10 + i, 1 + i % 5) for i in range(50)]
    path.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n" + "".join(f"{a},{p},{d}\n" for a, p, d in rows))
    trace = load_trace(path)
    assert len(trace) == 50 and trace.arrivals is not None
    slow = trace_requests(trace, 20, 1.0, seed=3, max_seq_len=40)
    fast = trace_requests(trace, 20, 4.0, seed=3, max_seq_len=40)
    assert all(len(s.prompt_token_ids) + s.max_tokens <= 40 for s in slow)
    assert [s.prompt_token_ids for s in slow] == [s.prompt_token_ids for s in fast]
    np.testing.assert_allclose([4 * s.arrival_time for s in fast], [s.arrival_time for s in slow])
    replay = trace_requests(trace, 5, None, seed=0, arrival="trace")
    assert replay[0].arrival_time == 0.0 and np.allclose(np.diff([r.arrival_time for r in replay]), 0.5)
    assert all(s.arrival_time == 0.0 for s in trace_requests(trace, 5, None))
    with pytest.raises(FileNotFoundError):
        load_trace(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("num_prefill_tokens,num_decode_tokens\n10,2\nten,3\n")
    with pytest.raises(ValueError, match=r"bad\.csv' line 3: num_prefill_tokens is 'ten', not a number"):
        load_trace(bad)


def test_the_shipped_traces_load_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("conv", "code", "arxiv"):
        trace = load_trace(name)
        assert len(trace) > 8000 and (trace.arrivals is None) == (name == "arxiv")


def test_shared_prefix_batch_shape_and_saving():
    specs = shared_prefix_batch(4, 50, 3, suffix_len=(5, 9), output_len=(2, 4), seed=1, vocab=10**9)
    assert len(specs) == 12
    prefixes = [s.prompt_token_ids[:50] for s in specs]
    assert sorted(prefixes.count(p) for p in set(prefixes)) == [3, 3, 3, 3]
    assert prefixes != sorted(prefixes, key=prefixes.index)  # shuffled: not grouped by prefix
    assert all(2 <= s.max_tokens <= 4 and 55 <= len(s.prompt_token_ids) <= 59 for s in specs)
    total = sum(len(s.prompt_token_ids) for s in specs)
    assert token_saving_ratio(specs) == pytest.approx(4 * 2 * 50 / total)  # each prefix computed once
    assert token_saving_ratio(specs, block_size=16) == pytest.approx(4 * 2 * 48 / total)  # whole blocks only
