from itertools import combinations, pairwise

import numpy as np
import pytest
import torch

from thrifty.distributed.sgc import (
    CyclicGradientCoder,
    SelectiveRepeatCoder,
    SequentialGradientCoder,
    chunk_slices,
    conforms,
    cyclic_encoding_matrix,
    cyclic_support,
    decoding_vector,
    gilbert_elliott_trace,
    make_coder,
    simulate,
    worker_times,
)


@pytest.mark.parametrize("n", range(1, 7))
def test_cyclic_code_decodes_every_straggler_pattern_exactly(n):
    for s in range(n):
        b = cyclic_encoding_matrix(n, s, seed=n)
        support = cyclic_support(n, s)
        assert all(set(torch.nonzero(b[i]).flatten().tolist()) <= set(support[i]) for i in range(n))
        parts = torch.randn(n, 7, dtype=torch.float64)
        coded = b @ parts
        for responders in combinations(range(n), n - s):
            a = decoding_vector(b, responders, s)
            assert (a @ b - 1).abs().max().item() < 1e-8
            assert a[[i for i in range(n) if i not in responders]].abs().sum() == 0
            assert torch.allclose(a @ coded, parts.sum(0), atol=1e-8)


def test_bad_code_parameters_and_patterns_raise_value_errors():
    with pytest.raises(ValueError, match="0 <= s < n"):
        cyclic_encoding_matrix(4, 4)
    with pytest.raises(ValueError, match="0 <= s < n"):
        CyclicGradientCoder(3, -1)
    with pytest.raises(ValueError, match="2 stragglers but the code tolerates s = 1"):
        decoding_vector(cyclic_encoding_matrix(5, 1), [0, 1, 2], 1)
    with pytest.raises(ValueError, match="1 <= B < W"):
        SequentialGradientCoder(4, 3, 3, 1)
    with pytest.raises(ValueError, match="lambda"):
        SequentialGradientCoder(4, 1, 2, 5)
    with pytest.raises(ValueError, match="divide W - 1"):
        SelectiveRepeatCoder(6, 2, 4, 2)
    with pytest.raises(ValueError, match="scheme"):
        make_coder("mds", 4, (1,))
    coder = CyclicGradientCoder(4, 1)
    with pytest.raises(ValueError, match=r"stragglers \[0, 2\] are not tolerated"):
        coder.check_pattern([True, False, True, False])


def test_msgc_load_matches_the_official_formula_and_the_chunk_sizes():
    for n, b, w, lambd in [(4, 1, 2, 1), (6, 2, 4, 2), (8, 3, 5, 3), (5, 2, 3, 0)]:
        coder = SequentialGradientCoder(n, b, w, lambd)
        units = sum(u for _, u in coder.chunk_units())
        assert coder.load == pytest.approx(coder.slots * (lambd + 1) / units)
        assert coder.load == pytest.approx((lambd + 1) * (w - 1 + b) / (n * (b + (w - 1) * (lambd + 1))))
        assert coder.delay == w - 2 + b
    assert SequentialGradientCoder(4, 1, 3, 4).load == pytest.approx(3 / 8)  # lambda = n: D1 only
    assert SelectiveRepeatCoder(6, 1, 3, 3).s == 1 and SelectiveRepeatCoder(6, 1, 3, 3).delay == 1


def test_chunk_slices_tile_the_batch_in_proportion_to_the_units():
    coder = SequentialGradientCoder(4, 1, 3, 1)  # D1 pieces of 2 units, D2 parts of 1 unit
    slices = chunk_slices(coder, 120)
    units = dict(coder.chunk_units())
    assert list(slices) == list(units)
    bounds = list(slices.values())
    assert bounds[0].start == 0 and bounds[-1].stop == 120
    assert all(a.stop == b.start for a, b in pairwise(bounds))
    total = sum(units.values())
    for key, sl in slices.items():
        assert sl.stop - sl.start == pytest.approx(120 * units[key] / total, abs=1)


def _decode_trace(coder, trace, num_jobs):
    """Run the coder over a straggler trace with random per-chunk gradients; return decoded and true job sums."""
    coder.reset(num_jobs)
    units = [key for key, _ in coder.chunk_units()]
    grads = {j: dict(zip(units, torch.randn(len(units), 3, dtype=torch.float64), strict=True)) for j in range(num_jobs)}
    results, decoded = {}, {}
    for r in range(num_jobs + coder.delay):
        plan = coder.assignment()
        responders = coder.finish_round(trace[r])
        for i in np.flatnonzero(responders):
            for task in plan[i]:
                results[(int(i), task)] = sum(c * grads[task.job][k] for k, c in coder.task_chunks(int(i), task))
        job = coder.decodable_job(r)
        if job is not None:
            decoded[job] = coder.decode(job, results)
    return decoded, {j: sum(g.values()) for j, g in grads.items()}


@pytest.mark.parametrize(
    "coder", [CyclicGradientCoder(5, 2), SelectiveRepeatCoder(5, 1, 3, 3), SequentialGradientCoder(5, 2, 3, 2)]
)
def test_every_job_decodes_to_the_exact_gradient_sum_under_bursty_stragglers(coder):
    trace = gilbert_elliott_trace(5, 60, 0.15, 0.4, torch.Generator().manual_seed(3))
    decoded, truth = _decode_trace(coder, trace, 55)
    assert sorted(decoded) == list(range(55))
    for j in range(55):
        assert torch.allclose(decoded[j], truth[j], atol=1e-8)


def test_conforming_bursts_are_tolerated_by_msgc_at_lower_load_than_gc():
    n, rounds = 6, 14
    trace = np.zeros((rounds, n), dtype=bool)
    trace[0:2, 0] = trace[5:7, 3] = trace[5, 1] = trace[9:11, 5] = True  # bursts <= 2, <= 2 workers per 4 rounds
    assert conforms(trace, 2, 4, 2) and not conforms(trace, 1, 4, 2) and not conforms(trace, 2, 4, 1)
    msgc, gc1, gc0 = SequentialGradientCoder(n, 2, 4, 2), CyclicGradientCoder(n, 1), CyclicGradientCoder(n, 0)
    assert msgc.load < gc1.load
    jobs = rounds - msgc.delay
    results = {}
    for coder in (msgc, gc1, gc0):
        times = worker_times(trace, coder.load, unit=1.0, latency=1.0, slowdown=3.0, jitter=0.05)
        results[coder] = simulate(coder, times, jobs, mu=0.1)
        assert results[coder].jobs_decoded == jobs
    assert results[msgc].waited_rounds == 0
    assert results[gc1].waited_rounds == 1  # round 5 has two stragglers
    assert results[gc0].waited_rounds == int(trace[:jobs].any(1).sum())
    broken = trace.copy()
    broken[7, 3] = True  # a burst of 3
    assert (
        simulate(
            msgc, worker_times(broken, msgc.load, unit=1.0, latency=1.0, slowdown=3.0, jitter=0.05), jobs, mu=0.1
        ).waited_rounds
        >= 1
    )


def test_gilbert_elliott_trace_has_its_stationary_rate_and_mean_burst():
    trace = gilbert_elliott_trace(200, 2000, 0.02, 0.25, torch.Generator().manual_seed(0))
    assert trace.mean() == pytest.approx(0.02 / 0.27, abs=0.01)
    starts = (trace[1:] & ~trace[:-1]).sum()
    assert trace[1:].sum() / starts == pytest.approx(4.0, rel=0.1)
    with pytest.raises(ValueError, match="probability"):
        gilbert_elliott_trace(2, 2, 1.5, 0.5)


@pytest.mark.parametrize(
    ("make", "bwl"),
    [
        (lambda: SequentialGradientCoder(4, 2, 3, 1), (2, 3, 1)),
        (lambda: SequentialGradientCoder(5, 1, 3, 2), (1, 3, 2)),
        (lambda: SequentialGradientCoder(5, 2, 4, 3), (2, 4, 3)),
        (lambda: SelectiveRepeatCoder(5, 1, 3, 2), (1, 3, 2)),
        (lambda: SelectiveRepeatCoder(5, 2, 5, 3), (2, 5, 3)),
    ],
)
def test_every_conforming_bursty_trace_decodes_without_waiting(make, bwl):
    """The schemes' guarantee: a trace obeying the (B, W, lambda) model never forces a wait and every job decodes."""
    coder, gen, checked = make(), torch.Generator().manual_seed(11), 0
    while checked < 25:
        trace = gilbert_elliott_trace(coder.n, 16, 0.12, 0.45, gen)
        if not trace.any() or not conforms(trace, *bwl):
            continue
        checked += 1
        jobs = 16 - coder.delay
        coder.reset(jobs)
        for r in range(16):
            coder.check_pattern(trace[r])
            assert not coder.finish_round(trace[r])[trace[r]].any()
            job = coder.decodable_job(r)
            assert job is None or coder.is_decodable(job)
