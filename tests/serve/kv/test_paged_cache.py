"""The paged KV tensor and the flat-batch metadata: slot mapping, positions, decode grouping, writes."""

from __future__ import annotations

import pytest
import torch

from thrifty.serve.kv.paged_cache import AttentionMetadata, PagedKVCache, SeqChunk


def test_metadata_of_a_mixed_batch():
    bs = 4
    chunks = [
        SeqChunk([11, 12, 13], start=5, block_table=[7, 2]),  # positions 5..7: block 2 offsets 1..3
        SeqChunk([21], start=9, block_table=[0, 3, 6]),  # a decode at position 9: block 6 offset 1
        SeqChunk([31, 32, 33, 34, 35], start=0, block_table=[1, 4]),
        SeqChunk([41], start=0, block_table=[5]),  # a one-token prompt attends like a decode
    ]
    meta = AttentionMetadata.build(chunks, bs, num_slots=8 * bs)
    assert meta.input_ids.tolist() == [11, 12, 13, 21, 31, 32, 33, 34, 35, 41]
    assert meta.positions.tolist() == [5, 6, 7, 9, 0, 1, 2, 3, 4, 0]
    assert meta.slot_mapping.tolist() == [9, 10, 11, 25, 4, 5, 6, 7, 16, 20]
    assert meta.query_starts == [0, 3, 4, 9] and meta.query_lens == [3, 1, 5, 1]
    assert meta.context_lens == [8, 10, 5, 1] and meta.num_blocks == [2, 3, 2, 1]
    assert meta.logits_indices.tolist() == [2, 3, 8, 9]
    assert meta.decode_seqs == [1, 3] and meta.prefill_seqs == [0, 2]
    assert meta.decode_token_idx.tolist() == [3, 9]
    assert meta.decode_block_tables.tolist() == [[0, 3, 6], [5, 0, 0]]
    assert meta.decode_mask[:, 0, 0].tolist() == [[True] * 10 + [False] * 2, [True] + [False] * 11]


def test_write_places_keys_and_values_in_their_slots():
    cache = PagedKVCache(num_layers=2, num_blocks=3, num_kv_heads=2, head_dim=5, block_size=4)
    k = torch.randn(3, 2, 5)
    v = torch.randn(3, 2, 5)
    cache.write(1, torch.tensor([9, 2, 4]), k, v)
    keys, values = cache.layer(1)
    assert torch.equal(keys[2, 1], k[0]) and torch.equal(keys[0, 2], k[1]) and torch.equal(keys[1, 0], k[2])
    assert torch.equal(values[2, 1], v[0]) and cache.kv[0].abs().sum() == 0
    assert cache.num_slots == 12 and cache.nbytes() == 2 * 2 * 3 * 4 * 2 * 5 * 4


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="num_blocks"):
        PagedKVCache(num_layers=1, num_blocks=0, num_kv_heads=1, head_dim=4)
    with pytest.raises(ValueError, match="at least one"):
        AttentionMetadata.build([], 16)
    with pytest.raises(ValueError, match="needs >= 1 token"):
        AttentionMetadata.build([SeqChunk([], 0, [0])], 16)


def test_slot_mapping_of_long_chunks_follows_the_formula():
    bs = 4
    table = [9, 3, 7, 0, 5]
    chunks = [SeqChunk(list(range(13)), start=6, block_table=table), SeqChunk([1], start=3, block_table=[2])]
    meta = AttentionMetadata.build(chunks, bs)
    expected = [table[p // bs] * bs + p % bs for p in range(6, 19)] + [2 * bs + 3]
    assert meta.slot_mapping.tolist() == expected
    assert meta.positions.tolist() == [*range(6, 19), 3]
    assert meta.slot_mapping.dtype == meta.positions.dtype == meta.input_ids.dtype == torch.long
    assert meta.block_tables.tolist() == [table, [2, 0, 0, 0, 0]]


def test_gather_copies_keys_and_values_of_the_given_blocks():
    cache = PagedKVCache(num_layers=2, num_blocks=6, num_kv_heads=2, head_dim=3, block_size=4)
    cache.kv.copy_(torch.randn(cache.kv.shape))
    blocks = torch.tensor([4, 0, 4, 2])
    keys, values = cache.gather(1, blocks)
    k_all, v_all = cache.layer(1)
    assert torch.equal(keys, k_all[blocks]) and torch.equal(values, v_all[blocks])
    keys.zero_()  # a copy, not a view of the cache
    assert cache.kv[1, 0, 4].abs().sum() > 0


def test_decode_bias_is_the_mask_as_an_additive_bias_made_once():
    chunks = [SeqChunk([1], start=5, block_table=[0, 1]), SeqChunk([2], start=1, block_table=[2])]
    meta = AttentionMetadata.build(chunks, 4)
    bias = meta.decode_bias(torch.float32)
    assert bias.shape == meta.decode_mask.shape and bias.dtype == torch.float32
    assert torch.equal(bias == 0, meta.decode_mask) and torch.isneginf(bias[~meta.decode_mask]).all()
    assert meta.decode_bias(torch.float32) is bias
    assert meta.decode_bias(torch.bfloat16).dtype == torch.bfloat16
    prefill_only = AttentionMetadata.build([SeqChunk([1, 2], start=0, block_table=[0])], 4)
    assert prefill_only.decode_bias(torch.float32) is None
