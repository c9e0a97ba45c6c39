"""The paged flat-batch Llama: equal to Hugging Face's LlamaForCausalLM, chunking- and paging-invariant."""

from __future__ import annotations

import random

import pytest
import torch

from thrifty.serve.kv.paged_cache import AttentionMetadata, SeqChunk
from thrifty.serve.model.llama import LlamaConfig, LlamaForCausalLM
from thrifty.serve.model.loader import load_llama

BS = 4  # small blocks so that short sequences span several of them


# The tiny model's shape, as keyword arguments of both LlamaConfig and transformers.LlamaConfig.
TINY = dict(
    vocab_size=61,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    rope_theta=500.0,
)


def tiny_config(**kw) -> LlamaConfig:
    return LlamaConfig(**{**TINY, **kw})


def random_model(config: LlamaConfig, dtype=torch.float64, seed=0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3) if p.dim() == 2 else p.uniform_(0.5, 1.5)
    return model.eval()


def run_chunks(model, cache, tokens, splits, table):
    """Compute ``tokens`` in chunks of sizes ``splits`` through the paged forward; all-token logits, concatenated."""
    out, start = [], 0
    for n in splits:
        meta = AttentionMetadata.build([SeqChunk(tokens[start : start + n], start, table)], BS)
        out.append(model(meta, cache, all_logits=True))
        start += n
    return torch.cat(out)


def random_splits(n: int, rng: random.Random) -> list[int]:
    cuts = sorted(rng.sample(range(1, n), rng.randint(0, min(5, n - 1))))
    return [b - a for a, b in zip([0, *cuts], [*cuts, n], strict=True)]


@pytest.mark.parametrize(
    "hf_kw",
    [
        {},
        {"tie_word_embeddings": True, "num_key_value_heads": 1, "attention_bias": True, "mlp_bias": True},
        {
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 500.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            }
        },
    ],
    ids=["plain", "tied-mqa-bias", "llama3-rope"],
)
@pytest.mark.slow  # importing transformers takes seconds
def test_logits_match_transformers_through_chunked_prefill_and_decodes(tmp_path, hf_kw):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**{**TINY, **hf_kw})).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # norms and biases away from their 1/0 init
    hf.save_pretrained(tmp_path, max_shard_size="20KB")  # a sharded checkpoint with an index file
    assert (tmp_path / "model.safetensors.index.json").is_file()
    model = load_llama(tmp_path)
    assert model.dtype == torch.float32 and not any(p.requires_grad for p in model.parameters())

    tokens = torch.randint(0, 61, (30,)).tolist()
    with torch.no_grad():
        ref = hf(torch.tensor([tokens])).logits[0]
        cache = model.make_cache(num_blocks=12, block_size=BS)
        table = [7, 2, 9, 0, 11, 4, 5, 1]  # scattered blocks
        # prompt of 24 tokens in chunks 9 + 1 + 14, then 6 decodes
        got = run_chunks(model, cache, tokens, [9, 1, 14, 1, 1, 1, 1, 1, 1], table)
        dense = model.forward_dense(torch.tensor([tokens]))[0]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dense, ref, atol=1e-5, rtol=1e-5)


def test_any_chunk_split_and_any_block_table_equals_one_shot_prefill():
    model = random_model(tiny_config())
    rng = random.Random(1)
    tokens = [rng.randrange(61) for _ in range(37)]
    with torch.no_grad():
        ref = model.forward_dense(torch.tensor([tokens]))[0]
        for _ in range(8):
            table = rng.sample(range(20), 10)
            cache = model.make_cache(num_blocks=20, block_size=BS)
            got = run_chunks(model, cache, tokens, random_splits(len(tokens), rng), table)
            torch.testing.assert_close(got, ref, atol=1e-10, rtol=1e-10)


def test_mixed_flat_batch_equals_each_sequence_alone():
    """Prefill chunks and decodes of several sequences in one flat batch (SARATHI's fused batch)."""
    model = random_model(tiny_config())
    rng = random.Random(2)
    seqs = [[rng.randrange(61) for _ in range(n)] for n in (13, 21, 6, 9)]
    refs = [model.forward_dense(torch.tensor([s]))[0].detach() for s in seqs]
    cache = model.make_cache(num_blocks=32, block_size=BS)
    tables = [list(range(i, 32, 4)) for i in range(4)]  # interleaved blocks
    done = [0, 0, 0, 0]
    with torch.no_grad():
        # step 1: seq 0 prefills 12, seq 1 prefills 5, seq 3 prefills 8
        # step 2: seq 0 decodes (token 12), seq 1 continues 16, seq 2 prefills 6 from scratch, seq 3 decodes
        for plan in ({0: 12, 1: 5, 3: 8}, {0: 1, 1: 16, 2: 6, 3: 1}):
            chunks = [SeqChunk(seqs[i][done[i] : done[i] + n], done[i], tables[i]) for i, n in plan.items()]
            meta = AttentionMetadata.build(chunks, BS)
            assert meta.decode_seqs == [i for i, n in enumerate(plan.values()) if n == 1]
            all_logits = model(meta, cache, all_logits=True)
            last = model(AttentionMetadata.build(chunks, BS), cache)  # rewriting the same K/V changes nothing
            for j, (i, n) in enumerate(plan.items()):
                qs = meta.query_starts[j]
                torch.testing.assert_close(all_logits[qs : qs + n], refs[i][done[i] : done[i] + n])
                torch.testing.assert_close(last[j], refs[i][done[i] + n - 1])
            for i, n in plan.items():
                done[i] += n


def test_decode_batch_with_unequal_contexts_matches_dense():
    model = random_model(tiny_config(num_key_value_heads=1))
    rng = random.Random(3)
    lens = [3, 17, 8, 1, 30]
    seqs = [[rng.randrange(61) for _ in range(n + 1)] for n in lens]
    cache = model.make_cache(num_blocks=60, block_size=BS)
    tables = [list(range(12 * i, 12 * i + 12))[::-1] for i in range(len(seqs))]
    with torch.no_grad():
        for s, t, n in zip(seqs, tables, lens, strict=True):
            model(AttentionMetadata.build([SeqChunk(s[:n], 0, t)], BS), cache)
        meta = AttentionMetadata.build([SeqChunk(s[n:], n, t) for s, t, n in zip(seqs, tables, lens, strict=True)], BS)
        assert meta.prefill_seqs == [] and meta.decode_mask.shape == (5, 1, 1, 32)
        got = model(meta, cache)
    for row, s in zip(got, seqs, strict=True):
        torch.testing.assert_close(row, model.forward_dense(torch.tensor([s]))[0, -1].detach())


def test_hf_state_dict_round_trip_and_errors():
    config = tiny_config(tie_word_embeddings=True)
    a, b = random_model(config, seed=0), random_model(config, seed=1)
    sd = a.hf_state_dict()
    assert "lm_head.weight" not in sd and sd["model.layers.1.self_attn.k_proj.weight"].shape == (16, 32)
    b.load_hf_state_dict(sd)
    ids = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(a.forward_dense(ids), b.forward_dense(ids))
    with pytest.raises(KeyError, match="missing"):
        b.load_hf_state_dict({k: v for k, v in sd.items() if "v_proj" not in k})
    with pytest.raises(KeyError, match="does not use"):
        b.load_hf_state_dict({**sd, "model.layers.9.extra": torch.zeros(1)})


def test_bad_configs_and_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="multiple of num_key_value_heads"):
        tiny_config(num_key_value_heads=3)
    with pytest.raises(ValueError, match="silu"):
        tiny_config(hidden_act="gelu")
    with pytest.raises(ValueError, match="not supported"):
        tiny_config(rope_scaling={"rope_type": "yarn", "factor": 2.0})
    with pytest.raises(ValueError, match="model_type"):
        LlamaConfig.from_dict({"model_type": "gpt2"})
    model = random_model(tiny_config(max_position_embeddings=8))
    cache = model.make_cache(num_blocks=4, block_size=BS)
    with pytest.raises(ValueError, match="beyond the model's context"):
        model(AttentionMetadata.build([SeqChunk(list(range(9)), 0, [0, 1, 2])], BS), cache)
    with pytest.raises(ValueError, match="block table has 1"):
        AttentionMetadata.build([SeqChunk([1, 2, 3], 3, [0])], BS)
    with pytest.raises(ValueError, match="beyond the cache"):
        AttentionMetadata.build([SeqChunk([1, 2], 0, [4])], BS, num_slots=cache.num_slots)


def test_kv_bytes_per_token_is_what_the_paged_cache_holds_and_what_the_simulator_counts():
    from thrifty.serve.sim.model_specs import ModelSpec

    config = tiny_config()
    for dtype in (torch.float32, torch.bfloat16):
        cache = LlamaForCausalLM(config).make_cache(num_blocks=3, block_size=BS, dtype=dtype)
        assert cache.kv.numel() * cache.kv.element_size() == 3 * BS * config.kv_bytes_per_token(dtype)
    spec = ModelSpec("tiny", "tiny", 2, 32, 4, 2, 48, 61, 64, dtype_bytes=2)
    assert spec.kv_bytes_per_token() == config.kv_bytes_per_token(torch.bfloat16) == 2 * 2 * 2 * 8 * 2
