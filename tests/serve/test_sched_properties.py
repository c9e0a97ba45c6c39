"""Property-based tests of every scheduling policy over random workloads, driven by a fake executor."""

import random

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from thrifty.serve import SCHEDULERS, BlockManager, Request, SchedulerConfig, create_scheduler
from thrifty.serve.sched.sarathi_serve import dynamic_chunk_sizes

WHOLE_PREFILL = {"prefill_first", "orca"}


@st.composite
def workloads(draw, policy):
    block_size = draw(st.sampled_from([1, 2, 4, 16]))
    n = draw(st.integers(1, 12))
    prefixes = [[draw(st.integers(0, 3)) for _ in range(draw(st.integers(0, 24)))] for _ in range(3)]
    reqs = []
    for i in range(n):
        prefix = prefixes[draw(st.integers(0, 2))]
        suffix = [draw(st.integers(0, 3)) for _ in range(draw(st.integers(1, 20)))]
        reqs.append(Request(f"r{i}", prefix + suffix, draw(st.integers(1, 12))))
    offline = policy == "batchllm" and draw(st.booleans())
    arrivals = [0 if offline else draw(st.integers(0, 15)) for _ in reqs]
    longest = max(r.num_prompt_tokens + r.max_tokens - 1 for r in reqs)
    tight = draw(st.booleans())  # a pool barely larger than the longest request: heavy preemption
    num_blocks = -(-longest // block_size) + (draw(st.integers(0, 2)) if tight else draw(st.integers(0, 40)))
    max_num_seqs = draw(st.integers(1, 8))
    budget = draw(st.integers(max_num_seqs, 48))
    if policy == "prefill_first":
        budget = max(budget, longest)
    elif policy == "orca":
        budget = max(budget, max(r.num_prompt_tokens for r in reqs) + max_num_seqs)
    chunk = draw(st.none() | st.integers(1, 16)) if policy == "sarathi" else None
    dynamic = {}
    if policy == "sarathi_serve" and draw(st.booleans()):
        low = draw(st.integers(max_num_seqs, 24))
        dynamic = dict(
            dynamic_chunking=True,
            low_chunk_size=low,
            high_chunk_size=draw(st.integers(low, 64)),
            chunk_schedule_stages=draw(st.integers(1, 4)),
            chunk_schedule_max_tokens=draw(st.integers(1, 40)),
        )
        sizes = dynamic_chunk_sizes(low, dynamic["high_chunk_size"], dynamic["chunk_schedule_stages"])
        budget = max(budget, *sizes)
        max_num_seqs = min(max_num_seqs, *sizes)
    caching = draw(st.booleans())
    cfg = SchedulerConfig(
        max_num_batched_tokens=budget,
        max_num_seqs=max_num_seqs,
        chunk_size=chunk,
        kv_admission_threshold=draw(st.sampled_from([0.3, 0.8, 1.0])),
        **dynamic,
    )
    bm = BlockManager(num_blocks, block_size, enable_prefix_caching=caching, watermark=0.0)
    return bm, cfg, reqs, arrivals


def _check_policy(fake_executor, policy, data, eos, abort_prob):
    bm, cfg, reqs, arrivals = data
    sched = create_scheduler(policy, bm, cfg)
    stats = fake_executor(sched, reqs, arrivals, seed=len(reqs), eos=eos, abort_prob=abort_prob)
    if policy == "sarathi":
        assert stats["max_prefill_chunks"] <= 1
    event("preempted" if stats["preemptions"] else "no preemption")
    event("aborted" if any(r.finish_reason == "abort" for r in reqs) else "no abort")
    return stats


def _policy_test(policy):
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=workloads(policy), eos=st.booleans(), abort_prob=st.sampled_from([0.0, 0.05]))
    def test(fake_executor, data, eos, abort_prob):
        _check_policy(fake_executor, policy, data, eos, abort_prob)

    test.__name__ = f"test_{policy}_invariants"
    return test


test_prefill_first_invariants = _policy_test("prefill_first")
test_orca_invariants = _policy_test("orca")
test_sarathi_invariants = _policy_test("sarathi")
test_sarathi_serve_invariants = _policy_test("sarathi_serve")
test_batchllm_invariants = _policy_test("batchllm")


def test_every_policy_is_tested():
    assert set(SCHEDULERS) == {"prefill_first", "orca", "sarathi", "sarathi_serve", "batchllm"}


def test_heavy_preemption_loses_nothing(fake_executor):
    """Twenty requests on a pool that holds little more than one: every chunking policy preempts and finishes all."""
    rng = random.Random(3)
    for policy in ("prefill_first", "sarathi", "sarathi_serve", "batchllm"):
        reqs = [
            Request(f"r{i}", [rng.randrange(4) for _ in range(rng.randint(1, 12))], rng.randint(4, 12))
            for i in range(20)
        ]
        bm = BlockManager(7, block_size=4, watermark=0.0)
        sched = create_scheduler(policy, bm, SchedulerConfig(max_num_batched_tokens=32, max_num_seqs=8))
        stats = fake_executor(sched, reqs)
        assert all(r.finish_reason == "length" for r in reqs)
        if policy != "batchllm":  # BatchLLM's projected admission avoids preemption altogether
            assert stats["preemptions"] > 0, policy
        else:
            assert stats["preemptions"] == 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prompts=st.lists(
        st.tuples(st.integers(0, 2), st.lists(st.integers(0, 3), min_size=1, max_size=12), st.integers(1, 10)),
        min_size=1,
        max_size=8,
    ),
    block_size=st.sampled_from([1, 2, 4]),
    spare_blocks=st.integers(0, 20),
    budget=st.integers(8, 40),
    chunk=st.none() | st.integers(1, 8),
)
def test_outputs_identical_whatever_the_policy(prompts, block_size, spare_blocks, budget, chunk, fake_executor):
    """Greedy outputs (a function of the KV read through the block tables) do not depend on the policy, the
    chunking, prefix caching or preemption."""
    shared = [[1, 2, 3, 1, 2, 3, 1, 2], [3, 3, 2, 2, 1, 1], []]
    specs = [(shared[p] + suffix, max_tokens) for p, suffix, max_tokens in prompts]
    longest = max(len(p) + m - 1 for p, m in specs)
    results = []
    for policy in sorted(SCHEDULERS):
        for caching in (False, True):
            bm = BlockManager(-(-longest // block_size) + spare_blocks, block_size, caching, watermark=0.0)
            cfg = SchedulerConfig(max_num_batched_tokens=max(budget, longest), max_num_seqs=4, chunk_size=chunk)
            reqs = [Request(f"r{i}", p, m) for i, (p, m) in enumerate(specs)]
            fake_executor(create_scheduler(policy, bm, cfg), reqs, eos=True)
            results.append([r.output_token_ids for r in reqs])
    assert all(outputs == results[0] for outputs in results)
