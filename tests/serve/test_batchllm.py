"""BatchLLM: prefix tree, one-level flattening against brute force, analytic token saving, prefix lifetime."""

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thrifty.serve import BlockManager, Request, RequestStatus, SchedulerConfig
from thrifty.serve.sched.batchllm import BatchLLMScheduler, build_prefix_tree, plan_prefix_groups


def _lcp(keys):
    n = 0
    for column in zip(*keys, strict=False):
        if len(set(column)) > 1:
            break
        n += 1
    return n


def _partitions(items):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _partitions(rest):
        yield [[first], *part]
        for i in range(len(part)):
            yield [*part[:i], [first, *part[i]], *part[i + 1 :]]


def _brute_force_savings(keys, block_size):
    best = 0
    for part in _partitions(list(range(len(keys)))):
        total = sum((len(g) - 1) * (_lcp([keys[i] for i in g]) // block_size * block_size) for g in part)
        best = max(best, total)
    return best


def test_prefix_tree_is_compact():
    keys = [[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9], [7]]
    nodes = build_prefix_tree(keys)
    depths = sorted(n.depth for n in nodes)
    assert depths == [0, 1, 2, 3, 3, 4, 4]  # root, [7], [1,2], [1,2,9], [1,2,3], and the two leaves
    root = nodes[0]
    assert root.num_leaves == 4 and sorted(len(c.ends) for c in root.children) == [0, 1]


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(st.lists(st.integers(0, 2), min_size=0, max_size=7), min_size=1, max_size=6),
    block_size=st.sampled_from([1, 2, 3]),
)
def test_one_level_plan_is_optimal(keys, block_size):
    plan = plan_prefix_groups(keys, block_size)
    assert plan.savings == _brute_force_savings(keys, block_size)
    members = [i for _, g in plan.groups for i in g]
    assert len(members) == len(set(members))
    recomputed = sum((len(g) - 1) * p for p, g in plan.groups)
    assert recomputed == plan.savings
    for p, g in plan.groups:
        assert p % block_size == 0 and p <= _lcp([keys[i] for i in g])
    assert plan.savings <= plan.multi_level_savings


def _synthetic(num_prefixes, per_group, prefix_len, suffix_len, trunk_len=0, seed=0):
    """``num_prefixes`` groups of ``per_group`` prompts: trunk (shared by all) + group prefix + distinct suffix."""
    rng = random.Random(seed)
    trunk = [1000 + i for i in range(trunk_len)]
    reqs = []
    for g in range(num_prefixes):
        prefix = [2000 + 100 * g + i for i in range(prefix_len)]
        for m in range(per_group):
            suffix = [3000 + 100 * (g * per_group + m) + i for i in range(suffix_len)]
            reqs.append(Request(f"g{g}m{m}", trunk + prefix + suffix, rng.randint(1, 6)))
    rng.shuffle(reqs)
    return reqs


@pytest.mark.parametrize("shape", [(4, 3, 32, 5), (6, 8, 64, 1), (1, 5, 16, 3)])
def test_token_saving_ratio_is_analytic_and_realised(shape, fake_executor):
    groups, k, prefix_len, suffix_len = shape
    reqs = _synthetic(groups, k, prefix_len, suffix_len)
    bm = BlockManager(400, block_size=16)
    sched = BatchLLMScheduler(bm, SchedulerConfig(max_num_batched_tokens=64, max_num_seqs=16))
    planned = sched.add_requests(reqs)
    expected = groups * (k - 1) * prefix_len
    assert sched.planned_saved_tokens == expected
    assert sched.token_saving_ratio == pytest.approx(expected / (groups * k * (prefix_len + suffix_len)))
    assert sorted(g.prefix_len for g in planned) == [prefix_len] * groups
    ratios = [g.decode_ratio for g in planned]
    assert ratios == sorted(ratios, reverse=True)  # decode-heavy groups first
    fake_executor(sched, reqs)
    assert sched.realized_saved_tokens == expected
    assert bm.num_cached_blocks == 0  # sharing is planned: nothing is left in an LRU cache


def test_two_level_tree_flattens_to_the_better_level():
    # trunk of 32 shared by 4 groups x 2 members, group prefixes of 16: grouping by trunk + prefix saves
    # 4 * 1 * 48 = 192 tokens; one group on the trunk alone saves 7 * 32 = 224, which wins
    reqs = _synthetic(4, 2, 16, 3, trunk_len=32)
    plan = plan_prefix_groups([r.prompt_token_ids[:-1] for r in reqs], 16)
    assert plan.savings == 224 and [p for p, _ in plan.groups] == [32]
    assert plan.multi_level_savings == 7 * 32 + 4 * 16
    # with 4 members per group the per-group prefix wins: 4 * 3 * 48 = 576 > 15 * 32 = 480
    reqs = _synthetic(4, 4, 16, 3, trunk_len=32)
    plan = plan_prefix_groups([r.prompt_token_ids[:-1] for r in reqs], 16)
    assert plan.savings == 576 and sorted(p for p, _ in plan.groups) == [48] * 4


def test_prefix_blocks_are_freed_when_the_group_ends():
    reqs = _synthetic(3, 4, 32, 4)
    bm = BlockManager(200, block_size=16)
    sched = BatchLLMScheduler(bm, SchedulerConfig(max_num_batched_tokens=48, max_num_seqs=4))
    groups = sched.add_requests(reqs)
    step = 0
    while sched.has_unfinished():
        out = sched.schedule(now=float(step))
        sched.update(out, {c.request_id: 0 for c in out.chunks if c.sample}, now=float(step))
        step += 1
        for g in groups:
            pre = g.prefix_request
            if all(m.is_finished for m in g.members):
                assert pre.status is RequestStatus.FINISHED and pre.block_table == []
            elif pre.status is RequestStatus.RUNNING:
                assert all(bm.ref_counts[b] >= 1 for b in pre.block_table)
    assert sched.prefix_tokens_computed == 3 * 32  # each prefix prefilled exactly once
    lifetimes = sched.prefix_lifetimes
    assert [gid for gid, _, _ in lifetimes] == sorted(g.group_id for g in groups)
    assert all(0 < steps < step for _, _, steps in lifetimes)
    assert all(rc == 0 for rc in bm.ref_counts)


def test_members_wait_for_their_prefix_and_share_its_blocks():
    reqs = _synthetic(1, 3, 32, 2)
    bm = BlockManager(50, block_size=16)
    sched = BatchLLMScheduler(bm, SchedulerConfig(max_num_batched_tokens=20, max_num_seqs=4))
    (group,) = sched.add_requests(reqs)
    out = sched.schedule()
    assert [(c.request_id, c.num_tokens, c.sample) for c in out.chunks] == [("batchllm-prefix/0", 20, False)]
    sched.update(out, {})
    out = sched.schedule()
    assert [c.request_id for c in out.chunks] == ["batchllm-prefix/0"]  # 12 tokens left; members wait for it
    sched.update(out, {})
    out = sched.schedule()
    assert all(m.block_table[:2] == group.prefix_request.block_table for m in group.members)
    assert [(c.start, c.num_tokens) for c in out.chunks] == [(32, 2)] * 3
    assert [bm.ref_counts[b] for b in group.prefix_request.block_table] == [4, 4]


def test_memory_centric_admission_respects_the_threshold():
    reqs = [Request(f"r{i}", [i] * 16, 16) for i in range(8)]  # each needs 2 blocks of 16 over its life
    bm = BlockManager(10, block_size=16, watermark=0.0)
    sched = BatchLLMScheduler(
        bm, SchedulerConfig(max_num_batched_tokens=128, max_num_seqs=8, kv_admission_threshold=0.5)
    )
    sched.add_requests(reqs)
    sched.schedule()
    assert len(sched.running) == 2  # 2 x 2 = 4 blocks projected; a third would reach 6 > 0.5 x 10


def test_abort_every_member_frees_the_prefix():
    reqs = _synthetic(1, 3, 32, 2)
    bm = BlockManager(50, block_size=16)
    sched = BatchLLMScheduler(bm, SchedulerConfig(max_num_batched_tokens=64, max_num_seqs=4))
    (group,) = sched.add_requests(reqs)
    for _ in range(2):  # the prefix, then the members' suffixes (one token sampled each)
        out = sched.schedule()
        sched.update(out, {c.request_id: 0 for c in out.chunks if c.sample})
    assert all(m.num_output_tokens == 1 for m in reqs)
    for m in reqs:
        sched.abort(m.request_id)
    assert group.prefix_request.status is RequestStatus.FINISHED and bm.num_free_blocks == 50
    assert not sched.has_unfinished()


def test_unplanned_requests_are_planned_at_the_next_step(fake_executor):
    bm = BlockManager(50, block_size=4)
    sched = BatchLLMScheduler(bm, SchedulerConfig(max_num_batched_tokens=64, max_num_seqs=8))
    reqs = [Request(f"r{i}", [1, 2, 3, 4, 5, 6, 7, 8, i], 2) for i in range(3)]
    for r in reqs:
        sched.add_request(r)
    sched.abort("r2")
    fake_executor(sched, reqs[:2])
    assert sched.planned_saved_tokens == 8 and reqs[2].finish_reason == "abort"
    assert len(list(itertools.chain.from_iterable(g.members for g in sched.groups))) == 2
