"""LLMEngine, LLM and AsyncLLMEngine on a tiny random Llama: outputs independent of policy, chunking, prefix sharing
and preemption; EOS, stop strings, streaming text, abort, errors."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest
import torch

from thrifty.serve import SCHEDULERS, SchedulerConfig
from thrifty.serve.engine import LLM, AsyncLLMEngine, LLMEngine
from thrifty.serve.model.loader import TextTokenizer, save_pretrained
from thrifty.serve.model.testing import byte_tokenizer
from thrifty.serve.sampling import SamplingParams

VOCAB = 67
BS = 4


@pytest.fixture(scope="module")
def model(tiny_llama):
    return tiny_llama(VOCAB)


def greedy_reference(model, prompt, n):
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model.forward_dense(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt) :]


def prompts_with_shared_prefixes(seed=0):
    rng = random.Random(seed)
    prefix = [rng.randrange(VOCAB) for _ in range(13)]
    own = [[rng.randrange(VOCAB) for _ in range(n)] for n in (3, 9, 1, 17, 6, 2)]
    return [prefix + o for o in own[:4]] + own[4:] + [prefix[:8]]


def run_engine(engine, prompts, params):
    ids = [engine.add_request(p, params) for p in prompts]
    done = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out
    bm = engine.scheduler.block_manager
    bm.check_invariants()
    assert bm.num_free_blocks == bm.num_blocks and not any(bm.ref_counts)
    return [done[i] for i in ids]


def test_greedy_outputs_identical_whatever_policy_budget_prefix_caching_and_preemption(model):
    prompts = prompts_with_shared_prefixes()
    params = SamplingParams(max_tokens=9, temperature=0)
    expected = [greedy_reference(model, p, 9) for p in prompts]
    assert sorted(SCHEDULERS) == sorted(["prefill_first", "orca", "sarathi", "sarathi_serve", "batchllm"])
    saw_preemption = saw_hits = False
    combos = [(5, True, 11), (32, False, 80), (7, False, 11)]  # forced preemption with and without prefix sharing
    for name, (budget, caching, num_blocks) in itertools.product(SCHEDULERS, combos):
        if SCHEDULERS[name].prefills_whole_prompts:
            budget = 40
        config = SchedulerConfig(max_num_batched_tokens=budget, max_num_seqs=min(budget, 6))
        engine = LLMEngine(
            model, None, name, config, num_blocks=num_blocks, block_size=BS, enable_prefix_caching=caching
        )
        outs = run_engine(engine, prompts, params)
        got = [o.token_ids for o in outs]
        assert got == expected, (name, budget, caching, num_blocks)
        assert all(o.finish_reason == "length" for o in outs)
        saw_preemption |= engine.stats()["num_preemptions"] > 0
        saw_hits |= engine.stats()["prefix_hits"] > 0
    assert saw_preemption and saw_hits


def test_seeded_sampling_is_reproducible_across_batching(model):
    prompts = prompts_with_shared_prefixes(1)
    params = SamplingParams(max_tokens=8, temperature=0.9, top_p=0.9, top_k=20, seed=11)
    runs = []
    for name, budget, blocks in (("sarathi_serve", 6, 80), ("sarathi", 16, 11), ("orca", 40, 80)):
        config = SchedulerConfig(max_num_batched_tokens=budget, max_num_seqs=6)
        engine = LLMEngine(model, None, name, config, num_blocks=blocks, block_size=BS)
        runs.append([o.token_ids for o in run_engine(engine, prompts, params)])
    assert runs[0] == runs[1] == runs[2]
    engine = LLMEngine(model, None, num_blocks=80, block_size=BS)
    other = run_engine(engine, prompts, SamplingParams(max_tokens=8, temperature=0.9, seed=12))
    assert [o.token_ids for o in other] != runs[0]


@pytest.fixture(scope="module")
def text_engine_parts(tiny_llama):
    tok = byte_tokenizer()
    return tiny_llama(tok.vocab_size, eos=0), tok


def stream(engine, prompt, params):
    rid = engine.add_request(prompt, params)
    pieces, tokens, final = [], [], None
    while engine.has_unfinished():
        for out in engine.step():
            assert out.request_id == rid
            pieces.append(out.new_text)
            tokens += out.new_token_ids
            final = out
    assert final.finished and final.token_ids == tokens and "".join(pieces) == final.text
    return final


def test_text_streaming_stop_strings_and_eos(text_engine_parts):
    model, tok = text_engine_parts
    engine = LLMEngine(model, tok, num_blocks=64, block_size=BS)
    prompt = "def f(x):\n    return"
    full = stream(engine, prompt, SamplingParams(max_tokens=30, temperature=0, ignore_eos=True))
    assert full.finish_reason == "length" and len(full.token_ids) == 30
    assert full.text == tok.decode(full.token_ids)
    stop = full.text[len(full.text) // 2 :][:3]
    cut = full.text.index(stop)
    stopped = stream(engine, prompt, SamplingParams(max_tokens=30, temperature=0, stop=[stop, "\x00never"]))
    assert stopped.finish_reason == "stop" and stopped.text == full.text[:cut]
    assert stopped.token_ids == full.token_ids[: len(stopped.token_ids)]
    # the greedy continuation's 4th token as a stop token, then as EOS (through the config of a second model)
    stop_tok = full.token_ids[3]
    first = full.token_ids.index(stop_tok)
    by_id = stream(engine, prompt, SamplingParams(max_tokens=30, temperature=0, stop_token_ids=[stop_tok]))
    assert by_id.finish_reason == "stop" and by_id.token_ids == full.token_ids[: first + 1]
    eos_engine = LLMEngine(model, TextTokenizer(tok.tokenizer, [stop_tok]), num_blocks=64, block_size=BS)
    eos = stream(eos_engine, prompt, SamplingParams(max_tokens=30, temperature=0))
    assert eos.token_ids == by_id.token_ids and eos.text == tok.decode(full.token_ids[:first])


def test_abort_frees_blocks_and_reports(model):
    engine = LLMEngine(model, None, num_blocks=40, block_size=BS)
    a = engine.add_request(list(range(1, 20)), SamplingParams(max_tokens=50, temperature=0))
    b = engine.add_request(list(range(5, 9)), SamplingParams(max_tokens=5, temperature=0))
    for _ in range(3):
        engine.step()
    engine.abort(a)
    engine.abort("no-such-request")
    outs = engine.step()
    aborted = [o for o in outs if o.request_id == a]
    assert len(aborted) == 1 and aborted[0].finished and aborted[0].finish_reason == "abort"
    while engine.has_unfinished():
        outs = engine.step()
    assert outs[-1].request_id == b and outs[-1].finish_reason == "length"
    bm = engine.scheduler.block_manager
    assert bm.num_free_blocks == bm.num_blocks and engine.num_unfinished == 0


def test_bad_requests_raise_clear_errors(model, text_engine_parts):
    engine = LLMEngine(model, None, num_blocks=40, block_size=BS)
    with pytest.raises(ValueError, match="exceed the model's context of 96"):
        engine.add_request([1] * 90, SamplingParams(max_tokens=10))
    with pytest.raises(ValueError, match="no tokenizer"):
        engine.add_request("hello")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        engine.add_request([1, VOCAB])
    with pytest.raises(ValueError, match="empty"):
        engine.add_request([])
    with pytest.raises(ValueError, match="KV pool"):
        LLMEngine(model, None, num_blocks=4, block_size=BS).add_request(list(range(20)))
    engine.add_request([1, 2], request_id="x")
    with pytest.raises(ValueError, match="already in use"):
        engine.add_request([1, 2], request_id="x")
    assert not engine.scheduler.has_unfinished() and engine.has_unfinished()


def test_llm_generate_from_a_checkpoint_directory(tmp_path, text_engine_parts):
    model, tok = text_engine_parts
    save_pretrained(model, tok, tmp_path, dtype=torch.float32)
    llm = LLM(tmp_path, num_blocks=64, block_size=BS)
    prompts = ["import os\n", "def f(x):", "print("]
    outs = llm.generate(prompts, SamplingParams(max_tokens=6, temperature=0, ignore_eos=True), progress=False)
    assert [o.prompt for o in outs] == prompts
    with pytest.raises(ValueError, match="context"):
        llm.generate(["x", "y" * 2000], SamplingParams(max_tokens=4), progress=False)
    again = llm.generate(prompts, SamplingParams(max_tokens=6, temperature=0, ignore_eos=True), progress=False)
    assert [o.token_ids for o in again] == [o.token_ids for o in outs]
    for o, p in zip(outs, prompts, strict=True):
        ids = tok.encode(p)
        assert o.prompt_token_ids == ids and o.token_ids == greedy_reference(model.float(), ids, 6)
        model.double()


def test_async_engine_streams_and_aborts_on_early_exit(model):
    engine = LLMEngine(model, None, num_blocks=40, block_size=BS)
    async_engine = AsyncLLMEngine(engine)
    prompts = prompts_with_shared_prefixes(2)[:3]
    params = SamplingParams(max_tokens=7, temperature=0)

    async def collect(p):
        tokens = []
        async for out in async_engine.generate(p, params):
            tokens += out.new_token_ids
        return tokens

    async def leave_early(p):
        async for _ in async_engine.generate(p, SamplingParams(max_tokens=60, temperature=0)):
            break

    async def main():
        results = await asyncio.gather(*(collect(p) for p in prompts), leave_early(list(range(1, 10))))
        with pytest.raises(ValueError, match="context"):
            async for _ in async_engine.generate([1] * 95, params):
                pass
        return results[:3]

    try:
        got = asyncio.run(main())
        assert got == [greedy_reference(model, p, 7) for p in prompts]
        for _ in range(100):  # the loop thread applies the abort on its next pass
            if not engine.has_unfinished():
                break
            __import__("time").sleep(0.01)
        bm = engine.scheduler.block_manager
        assert not engine.has_unfinished() and bm.num_free_blocks == bm.num_blocks
    finally:
        async_engine.shutdown()
