"""Each policy's rule on hand-built situations, errors for bad input, and abort in every state."""

import pytest

from thrifty.serve import SCHEDULERS, BlockManager, Request, RequestStatus, SchedulerConfig, create_scheduler
from thrifty.serve.sched.sarathi_serve import dynamic_chunk_sizes


def _sched(policy, num_blocks=64, block_size=4, watermark=0.0, caching=True, **cfg):
    bm = BlockManager(num_blocks, block_size, enable_prefix_caching=caching, watermark=watermark)
    return create_scheduler(policy, bm, SchedulerConfig(**cfg))


def _step(sched, now=0.0, stopped=()):
    out = sched.schedule(now)
    finished = sched.update(out, {c.request_id: 7 for c in out.chunks if c.sample}, stopped, now)
    return out, finished


def _shape(out):
    return [(c.request_id, c.num_tokens) for c in out.chunks]


def _prompt(n, base=0):
    return [base + i for i in range(n)]


def test_prefill_first_stalls_running_decodes():
    s = _sched("prefill_first", max_num_batched_tokens=32, max_num_seqs=4)
    s.add_request(Request("a", _prompt(6), 5))
    assert _shape(_step(s)[0]) == [("a", 6)]
    assert _shape(_step(s)[0]) == [("a", 1)]
    s.add_request(Request("b", _prompt(9, 100), 3))
    assert _shape(_step(s)[0]) == [("b", 9)]  # a prefill-only batch: "a" stalls
    assert _shape(_step(s)[0]) == [("a", 1), ("b", 1)]


@pytest.mark.parametrize("policy", sorted(SCHEDULERS))
def test_prefills_whole_prompts_says_which_policies_need_the_longest_prompt_in_one_step(policy):
    whole = SCHEDULERS[policy].prefills_whole_prompts
    assert whole == (policy in ("prefill_first", "orca"))
    s = _sched(policy, max_num_batched_tokens=64 if whole else 16, max_num_seqs=4)
    req = Request("a", _prompt(40), 3)
    s.add_request(req)
    assert (s.max_prefill_tokens(req) is not None) == whole
    assert s.schedule().chunks[0].num_tokens == (40 if whole else 16)


def test_prefill_first_batches_whole_prompts_up_to_the_budget():
    s = _sched("prefill_first", max_num_batched_tokens=20, max_num_seqs=4)
    for i, n in enumerate([8, 8, 8]):
        s.add_request(Request(f"r{i}", _prompt(n, 100 * i), 2))
    assert _shape(_step(s)[0]) == [("r0", 8), ("r1", 8)]
    assert _shape(_step(s)[0]) == [("r2", 8)]


def test_orca_mixes_whole_prefills_with_decodes_and_reserves_the_lifetime():
    s = _sched("orca", max_num_batched_tokens=32, max_num_seqs=4)
    a = Request("a", _prompt(6), 5)
    s.add_request(a)
    assert _shape(_step(s)[0]) == [("a", 6)]
    assert len(a.block_table) == s.block_manager.blocks_for(6 + 5 - 1)
    s.add_request(Request("b", _prompt(9, 100), 3))
    assert _shape(_step(s)[0]) == [("a", 1), ("b", 9)]


def test_sarathi_one_chunk_plus_decodes():
    s = _sched("sarathi", max_num_batched_tokens=16, max_num_seqs=4, chunk_size=4)
    for i in range(2):
        s.add_request(Request(f"r{i}", _prompt(10, 100 * i), 4))
    shapes = [_shape(_step(s)[0]) for _ in range(6)]
    assert shapes == [
        [("r0", 4)],
        [("r0", 4)],
        [("r0", 2)],
        [("r0", 1), ("r1", 4)],  # the decode piggybacks on the next prompt's chunk
        [("r0", 1), ("r1", 4)],
        [("r0", 1), ("r1", 2)],
    ]


def test_sarathi_serve_decodes_then_partial_prefills_then_new_requests():
    s = _sched("sarathi_serve", max_num_batched_tokens=8, max_num_seqs=4)
    s.add_request(Request("a", _prompt(3), 10))
    s.add_request(Request("b", _prompt(12, 100), 10))
    assert _shape(_step(s)[0]) == [("a", 3), ("b", 5)]
    s.add_request(Request("c", _prompt(5, 200), 10))
    assert _shape(_step(s)[0]) == [("a", 1), ("b", 7)]  # no budget left for "c"
    assert _shape(_step(s)[0]) == [("a", 1), ("b", 1), ("c", 5)]
    assert _shape(_step(s)[0]) == [("a", 1), ("b", 1), ("c", 1)]


def test_sarathi_serve_preempts_the_lowest_priority_and_recomputes():
    # 3 blocks of 4: "a" and "b" hold one full block each after their prompts; only one block is left
    s = _sched("sarathi_serve", num_blocks=3, block_size=4, max_num_batched_tokens=16, max_num_seqs=4)
    a, b = Request("a", _prompt(4), 3), Request("b", _prompt(4, 100), 3)
    s.add_request(a)
    s.add_request(b)
    _step(s)
    out, _ = _step(s)  # "a" takes the last free block; "b" cannot append a slot and is preempted
    assert out.preempted == ["b"] and _shape(out) == [("a", 1)]
    assert b.status is RequestStatus.WAITING and b.num_preemptions == 1 and b.num_computed_tokens == 0
    assert b.output_token_ids == [7] and s.waiting[0] is b
    while s.has_unfinished():
        _step(s)
    assert a.output_token_ids == [7, 7, 7] and b.output_token_ids == [7, 7, 7]
    assert s.num_preemptions == 1


def test_sarathi_serve_recomputes_prompt_and_outputs_after_preemption():
    s = _sched("sarathi_serve", num_blocks=3, block_size=4, caching=False, max_num_batched_tokens=16, max_num_seqs=4)
    a, b = Request("a", _prompt(4), 3), Request("b", _prompt(4, 100), 3)
    s.add_request(a)
    s.add_request(b)
    shapes = []
    while s.has_unfinished():
        out, _ = _step(s)
        shapes.append((_shape(out), out.preempted))
    # "b" is preempted after its first token; once "a" ends it prefills its prompt and that token (5) at once
    assert shapes == [
        ([("a", 4), ("b", 4)], []),
        ([("a", 1)], ["b"]),
        ([("a", 1)], []),
        ([("b", 5)], []),
        ([("b", 1)], []),
    ]
    assert b.num_output_tokens == 3 and b.num_preemptions == 1


def test_max_num_seqs_caps_running_requests(fake_executor):
    for policy in ("prefill_first", "orca", "sarathi", "sarathi_serve", "batchllm"):
        s = _sched(policy, max_num_batched_tokens=64, max_num_seqs=2)
        reqs = [Request(f"r{i}", _prompt(5, 10 * i), 4) for i in range(5)]
        fake_executor(s, reqs)
        assert all(r.finish_reason == "length" for r in reqs)


def test_watermark_keeps_blocks_free_for_running_requests():
    s = _sched("sarathi_serve", num_blocks=8, block_size=4, watermark=0.5, max_num_batched_tokens=64, max_num_seqs=4)
    with pytest.raises(ValueError, match="watermark"):
        s.add_request(Request("big", _prompt(17), 1))  # 5 blocks > 8 - 4
    a, b = Request("a", _prompt(9), 4), Request("b", _prompt(9, 100), 4)
    s.add_request(a)
    s.add_request(b)
    out, _ = _step(s)
    assert _shape(out) == [("a", 9)]  # "b" would leave 8 - 6 = 2 < 4 blocks free
    while not a.is_finished:
        _step(s)
    assert _shape(_step(s)[0]) == [("b", 9)]


def test_dynamic_chunk_schedule():
    assert dynamic_chunk_sizes(512, 2048, 4) == [2048, 1536, 1024, 512]
    assert dynamic_chunk_sizes(32, 100, 3) == [96, 64, 32]
    s = _sched(
        "sarathi_serve",
        num_blocks=128,
        max_num_batched_tokens=128,
        max_num_seqs=4,
        dynamic_chunking=True,
        low_chunk_size=32,
        high_chunk_size=128,
        chunk_schedule_stages=4,
        chunk_schedule_max_tokens=256,
    )
    s.add_request(Request("a", _prompt(300), 2))
    sizes = [_step(s)[0].chunks[0].num_tokens for _ in range(5)]
    # 64 tokens per stage: stage 0 (128) for the first chunk, then stage 2 (64) at 128 computed, stage 3 (32) at 192
    assert sizes == [128, 64, 32, 32, 32]
    with pytest.raises(ValueError, match="exceeds the token budget"):
        _sched("sarathi_serve", max_num_batched_tokens=64, dynamic_chunking=True, low_chunk_size=32, max_num_seqs=4)


def test_prefix_hits_through_the_scheduler():
    s = _sched("sarathi_serve", block_size=4, max_num_batched_tokens=64, max_num_seqs=4)
    a, b = Request("a", _prompt(10), 2), Request("b", _prompt(10), 2)
    s.add_request(a)
    _step(s)
    s.add_request(b)
    out, _ = _step(s)
    assert b.num_cached_tokens == 8 and ("b", 2) in _shape(out)
    bm = s.block_manager
    assert (bm.prefix_queries, bm.prefix_hits) == (20, 8)


def test_stop_and_timing_fields():
    s = _sched("sarathi_serve", max_num_batched_tokens=16, max_num_seqs=4)
    r = Request("a", _prompt(5), 10, arrival_time=0.5)
    s.add_request(r)
    _step(s, now=1.0)
    _step(s, now=2.0)
    _, finished = _step(s, now=3.0, stopped={"a"})
    assert finished == [r] and r.finish_reason == "stop" and r.output_token_ids == [7, 7, 7]
    assert (r.first_scheduled_time, r.first_token_time, r.finish_time) == (1.0, 1.0, 3.0)
    assert r.token_times == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("policy", ["prefill_first", "orca", "sarathi", "sarathi_serve", "batchllm"])
def test_abort_in_every_state(policy):
    s = _sched(policy, num_blocks=6, block_size=4, max_num_batched_tokens=24, max_num_seqs=4)
    assert s.abort("nobody") is None
    reqs = [Request(f"r{i}", _prompt(6, 10 * i), 6) for i in range(4)]
    for r in reqs:
        s.add_request(r)
    s.abort("r3", now=2.0)  # waiting
    assert reqs[3].finish_reason == "abort" and reqs[3].finish_time == 2.0 and reqs[3] not in s.waiting
    assert s.abort("r3") is None  # already finished
    _step(s)
    running = [r for r in reqs if r.status is RequestStatus.RUNNING]
    assert running
    out = s.schedule()
    s.abort(running[0].request_id)  # running, with a chunk in flight: update must skip it
    finished = s.update(out, {c.request_id: 7 for c in out.chunks if c.sample})
    assert running[0] not in finished and running[0].block_table == []
    while s.has_unfinished():
        _step(s)
    assert all(r.is_finished for r in reqs)
    assert all(rc == 0 for rc in s.block_manager.ref_counts)


def test_abort_a_preempted_request():
    s = _sched("sarathi_serve", num_blocks=3, block_size=4, max_num_batched_tokens=16, max_num_seqs=4)
    a, b = Request("a", _prompt(4), 6), Request("b", _prompt(4, 100), 6)
    s.add_request(a)
    s.add_request(b)
    _step(s)
    out, _ = _step(s)
    assert out.preempted == ["b"]
    assert s.abort("b") is b and b.finish_reason == "abort" and not s.waiting
    while s.has_unfinished():
        _step(s)
    assert a.finish_reason == "length" and s.block_manager.num_free_blocks == 3


def test_bad_configuration_and_requests_are_rejected_clearly():
    with pytest.raises(ValueError, match="max_num_batched_tokens must be >= 1"):
        SchedulerConfig(max_num_batched_tokens=0)
    with pytest.raises(ValueError, match="max_num_seqs must be >= 1"):
        SchedulerConfig(max_num_seqs=0)
    with pytest.raises(ValueError, match="kv_admission_threshold"):
        SchedulerConfig(kv_admission_threshold=0.0)
    with pytest.raises(ValueError, match="overrun the token budget"):
        _sched("sarathi_serve", max_num_batched_tokens=8, max_num_seqs=16)
    with pytest.raises(ValueError, match="unknown scheduler 'fcfs'"):
        _sched("fcfs")
    with pytest.raises(ValueError, match="max_tokens must be >= 1"):
        Request("a", [1], 0)
    with pytest.raises(ValueError, match="at least one token"):
        Request("a", [], 1)
    s = _sched("sarathi_serve", num_blocks=4, block_size=4, max_num_batched_tokens=16, max_num_seqs=4)
    with pytest.raises(ValueError, match="KV pool admits 4 blocks"):
        s.add_request(Request("long", _prompt(30), 1))
    with pytest.raises(ValueError, match="KV pool"):
        s.add_request(Request("grows", _prompt(8), 12))  # 19 KV slots: 5 blocks
    s.add_request(Request("a", [1], 1))
    with pytest.raises(ValueError, match="already scheduled"):
        s.add_request(Request("a", [1], 1))
    p = _sched("prefill_first", max_num_batched_tokens=8, max_num_seqs=4)
    with pytest.raises(ValueError, match="prefills whole sequences"):
        p.add_request(Request("b", _prompt(6), 4))
    out = s.schedule()
    with pytest.raises(KeyError, match="no sampled token"):
        s.update(out, {})
