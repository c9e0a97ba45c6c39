"""A fake executor for scheduler tests: a paged "KV cache" of context hashes, read and written through the block
tables exactly as a model would, with invariants checked every step.

The fake KV of position ``p`` is ``hash((kv[p - 1], token[p]))``, computed from the value the cache holds for
``p - 1`` (as attention reads earlier keys and values), so a wrong block table, a bad prefix hit, a write into a
shared block or a preemption without recompute shows up as a KV that differs from the true one of the sequence.
The sampled token is a function of the last KV: outputs are "greedy", identical whatever the policy.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

import pytest
import torch

from thrifty.serve import BlockManager, Request, RequestStatus, Scheduler
from thrifty.serve.model.llama import LlamaConfig, LlamaForCausalLM
from thrifty.serve.sched.batchllm import PREFIX_ID, BatchLLMScheduler

VOCAB = 50
EOS = 0


def block_holders(sched: Scheduler) -> list[Request]:
    """Every request whose block table holds references (running requests and BatchLLM's shared prefixes)."""
    holders = list(sched.running)
    if isinstance(sched, BatchLLMScheduler):
        holders += sched._prefixes
    return holders


def check_blocks(sched: Scheduler) -> None:
    """Free + used = total and each block's reference count equals the number of tables holding it."""
    bm: BlockManager = sched.block_manager
    bm.check_invariants()
    refs = Counter(b for r in block_holders(sched) for b in r.block_table)
    assert [refs.get(b, 0) for b in range(bm.num_blocks)] == bm.ref_counts
    assert bm.num_free_blocks + bm.num_used_blocks == bm.num_blocks
    for r in sched.waiting:
        assert r.block_table == [] and r.num_computed_tokens == 0 and r.status is RequestStatus.WAITING


def true_kv(tokens: list[int]) -> list[int]:
    """The fake KV of every position of a sequence, computed from scratch."""
    out, prev = [], None
    for t in tokens:
        prev = hash((prev, t))
        out.append(prev)
    return out


class FakeModel:
    """Computes chunks into a paged fake KV pool and samples ``kv % VOCAB`` of the chunk's last position."""

    def __init__(self, bm: BlockManager) -> None:
        self.bs = bm.block_size
        self.kv: list[list[int | None]] = [[None] * bm.block_size for _ in range(bm.num_blocks)]

    def read(self, table: list[int], pos: int) -> int | None:
        return self.kv[table[pos // self.bs]][pos % self.bs]

    def compute(self, req: Request, start: int, end: int) -> int:
        tokens = req.all_token_ids
        expected = true_kv(tokens[:end])
        cached = [self.read(req.block_table, p) for p in range(start)]
        assert cached == expected[:start], f"{req.request_id}: the KV read through its block table is wrong"
        prev = cached[-1] if start else None
        for p in range(start, end):
            prev = hash((prev, tokens[p]))
            self.kv[req.block_table[p // self.bs]][p % self.bs] = prev
        assert prev == expected[-1]
        return prev % VOCAB


def run_fake_executor(
    sched: Scheduler,
    requests: list[Request],
    arrivals: list[int] | None = None,
    seed: int = 0,
    eos: bool = False,
    abort_prob: float = 0.0,
    max_steps: int = 20000,
) -> dict[str, int]:
    """Drive ``sched`` until every request ends, checking invariants each step; returns step statistics.

    Requests are added at their arrival step unless the caller already added them; with ``eos`` a sampled ``EOS``
    stops its request; ``abort_prob`` aborts a random unfinished request before a step."""
    rng = random.Random(seed)
    arrivals = arrivals or [0] * len(requests)
    pending = sorted(range(len(requests)), key=lambda i: arrivals[i])
    bm = sched.block_manager
    model = FakeModel(bm)
    budget = sched.config.max_num_batched_tokens
    stats = Counter()
    step = 0
    while pending or sched.has_unfinished():
        while pending and arrivals[pending[0]] <= step:
            req = requests[pending.pop(0)]
            if req.request_id not in sched.requests and not req.is_finished:  # not added up front
                sched.add_request(req)
        if abort_prob and sched.requests and rng.random() < abort_prob:
            victim = rng.choice(sorted(sched.requests))
            assert sched.abort(victim).finish_reason == "abort"
            check_blocks(sched)
        decoders = {r.request_id for r in sched.running if not r.is_prefilling}
        out = sched.schedule(now=float(step))
        step += 1
        assert step <= max_steps, "the scheduler stopped making progress"
        if sched.has_unfinished():
            assert out.chunks, f"empty step with work left: {sched!r}"
        assert out.num_batched_tokens <= budget
        assert len(sched.running) <= sched.config.max_num_seqs
        ids = [c.request_id for c in out.chunks]
        assert len(ids) == len(set(ids)), "a request got two chunks"
        sampled = {}
        for c in out.chunks:
            req = c.request
            assert c.start == req.num_computed_tokens and 0 < c.num_tokens and c.end <= req.num_tokens
            if c.request_id.startswith(PREFIX_ID):
                assert not c.sample
            else:
                assert c.sample == (c.end == req.num_tokens)
                assert req.status is RequestStatus.RUNNING and req in sched.running
            assert len(req.block_table) * bm.block_size >= c.end
            written = {req.block_table[p // bm.block_size] for p in range(c.start, c.end)}
            assert all(bm.ref_counts[b] == 1 for b in written), "a chunk writes into a shared block"
            token = model.compute(req, c.start, c.end)
            if c.sample:
                sampled[c.request_id] = token
        prefills = [c for c in out.chunks if c.request_id not in decoders]
        stats["max_prefill_chunks"] = max(stats["max_prefill_chunks"], len(prefills))
        stats["preemptions"] += len(out.preempted)
        if sched.name == "sarathi_serve":
            scheduled = {c.request_id for c in out.chunks if c.is_decode}
            assert decoders <= scheduled | set(out.preempted), "a running decode was stalled"
        if sched.name == "prefill_first" and prefills:
            assert not [c for c in out.chunks if c.request_id in decoders], "prefill_first mixed decodes in"
        check_blocks(sched)
        stopped = {rid for rid, tok in sampled.items() if eos and tok == EOS}
        for req in sched.update(out, sampled, stopped, now=float(step)):
            assert req.status is RequestStatus.FINISHED and req.block_table == []
        check_blocks(sched)
    assert all(r.status is RequestStatus.FINISHED for r in requests), "a request was lost"
    for r in requests:
        if r.finish_reason == "length":
            assert r.num_output_tokens == r.max_tokens
        elif r.finish_reason == "stop":
            assert 1 <= r.num_output_tokens <= r.max_tokens and r.output_token_ids[-1] == EOS
        else:
            assert r.finish_reason == "abort"
    assert all(rc == 0 for rc in bm.ref_counts) and bm.num_free_blocks == bm.num_blocks
    stats["steps"] = step
    return dict(stats)


def tiny_llama(
    vocab: int, eos: int | None = None, context: int = 96, dtype: torch.dtype = torch.float64
) -> LlamaForCausalLM:
    """A 2-layer, 32-wide random Llama (seed 0) with weights drawn wide enough that greedy outputs vary."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        eos_token_id=eos,
    )
    model = LlamaForCausalLM(config).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.4)
    return model.eval()


@pytest.fixture(name="fake_executor", scope="session")
def _fake_executor() -> Callable[..., dict[str, int]]:
    return run_fake_executor


@pytest.fixture(name="tiny_llama", scope="session")
def _tiny_llama() -> Callable[..., LlamaForCausalLM]:
    return tiny_llama
