"""BlockManager: reference counts, chained hashes of full blocks, LRU reuse, honest hit counters, conservation."""

import pytest

from thrifty.serve import BlockManager, Request


def _req(rid, tokens, max_tokens=4):
    return Request(rid, list(tokens), max_tokens)


def _compute_all(bm, req):
    req.num_computed_tokens = req.num_tokens
    bm.cache_blocks(req)


def test_allocate_covers_prompt_and_conserves_blocks():
    bm = BlockManager(10, block_size=4, watermark=0.0)
    r = _req("a", range(9))
    assert bm.can_allocate(r)
    bm.allocate(r)
    assert len(r.block_table) == 3 and r.num_computed_tokens == 0
    assert bm.num_free_blocks + bm.num_used_blocks == 10 and bm.num_used_blocks == 3
    assert bm.usage == pytest.approx(0.3)
    bm.free(r)
    assert r.block_table == [] and bm.num_free_blocks == 10 and all(rc == 0 for rc in bm.ref_counts)
    bm.check_invariants()


def test_chained_hash_of_full_blocks_only():
    bm = BlockManager(10, block_size=4)
    r = _req("a", range(10))
    bm.allocate(r)
    _compute_all(bm, r)
    assert bm.num_cached_blocks == 2  # two full blocks; the partial third is never hashed
    h0 = hash((None, (0, 1, 2, 3)))
    h1 = hash((h0, (4, 5, 6, 7)))
    assert bm._hashes[r.block_table[0]] == h0 and bm._hashes[r.block_table[1]] == h1
    assert bm._hashes[r.block_table[2]] is None
    # same second block after a different first block: different chained hash, no hit
    other = _req("b", [9, 9, 9, 9, 4, 5, 6, 7, 1])
    bm.allocate(other)
    assert other.num_computed_tokens == 0 and bm.prefix_hits == 0


def test_shared_prefix_refcounts_and_honest_counters():
    bm = BlockManager(16, block_size=4)
    a = _req("a", range(10))
    bm.allocate(a)
    assert (bm.prefix_queries, bm.prefix_hits) == (10, 0)
    _compute_all(bm, a)
    b = _req("b", [*range(8), 42, 43, 44])
    bm.allocate(b)
    assert b.block_table[:2] == a.block_table[:2] and b.block_table[2] != a.block_table[2]
    assert b.num_computed_tokens == b.num_cached_tokens == 8
    assert [bm.ref_counts[x] for x in b.block_table[:2]] == [2, 2]
    assert (bm.prefix_queries, bm.prefix_hits) == (21, 8)
    bm.free(a)
    assert [bm.ref_counts[x] for x in b.block_table[:2]] == [1, 1]
    bm.free(b)
    assert all(rc == 0 for rc in bm.ref_counts) and bm.num_free_blocks == 16
    bm.check_invariants()


def test_freed_cached_blocks_are_reused_then_evicted_lru():
    bm = BlockManager(4, block_size=2, watermark=0.0)
    a = _req("a", [1, 2, 3, 4, 5])
    bm.allocate(a)
    _compute_all(bm, a)
    first_blocks = a.block_table[:2]
    bm.free(a)
    assert bm.num_free_blocks == 4 and bm.num_cached_blocks == 2  # freed blocks keep their hash
    b = _req("b", [1, 2, 3, 4, 9])
    bm.allocate(b)
    assert b.block_table[:2] == first_blocks and b.num_cached_tokens == 4 and bm.prefix_hits == 4
    bm.free(b)
    # a request of four fresh blocks evicts every cached block: a later lookup misses and counts no hit
    c = _req("c", [7, 7, 7, 7, 7, 7, 7, 7])
    bm.allocate(c)
    bm.free(c)
    d = _req("d", [1, 2, 3, 4, 9])
    bm.allocate(d)
    assert d.num_cached_tokens == 0 and bm.prefix_hits == 4
    bm.check_invariants()


def test_lru_evicts_least_recently_freed_first():
    bm = BlockManager(4, block_size=2, watermark=0.0)
    old, new = _req("old", [1, 1, 0]), _req("new", [2, 2, 0])
    for r in (old, new):
        bm.allocate(r)
        _compute_all(bm, r)
    bm.free(old)
    bm.free(new)
    filler = _req("f", [5, 5, 5])  # two fresh blocks: the two unhashed partial blocks go first, no cached eviction
    bm.allocate(filler)
    assert bm.num_cached_blocks == 2
    bm.allocate(_req("g", [6]))  # one more: evicts the older cached block
    bm.allocate(probe_old := _req("po", [1, 1, 0]), num_tokens=0)
    assert probe_old.num_cached_tokens == 0
    probe_new = _req("pn", [2, 2, 0])
    assert bm.can_allocate(probe_new, num_tokens=2)
    bm.allocate(probe_new, num_tokens=2)
    assert probe_new.num_cached_tokens == 2


def test_full_hit_recomputes_last_block():
    bm = BlockManager(8, block_size=4)
    a = _req("a", range(8))
    bm.allocate(a)
    _compute_all(bm, a)
    b = _req("b", range(8))  # every token cached: the last block is recomputed so that b samples a token
    bm.allocate(b)
    assert b.num_computed_tokens == 4 and b.block_table[0] == a.block_table[0]
    assert b.block_table[1] != a.block_table[1]
    c = _req("c", range(9))  # the two full blocks hit; only token 8 is computed
    bm.allocate(c)
    assert c.num_computed_tokens == 8 and c.block_table[:2] == a.block_table


def test_hash_registered_only_once_computed():
    bm = BlockManager(8, block_size=4)
    a = _req("a", range(8))
    bm.allocate(a)
    a.num_computed_tokens = 5
    bm.cache_blocks(a)
    assert bm.num_cached_blocks == 1  # the second block's KV is not computed yet
    b = _req("b", range(9))
    bm.allocate(b)
    assert b.num_computed_tokens == 4


def test_append_slots_and_can_append_ignore_watermark():
    bm = BlockManager(4, block_size=2, watermark=0.5)
    r = _req("a", [1, 2])
    assert bm.can_allocate(r)  # 1 block leaves 3 >= watermark of 2
    bm.allocate(r)
    r.num_computed_tokens = 2
    assert bm.slots_needed(r, 1) == 1 and bm.can_append_slots(r, 1)
    bm.append_slots(r, 1)
    assert len(r.block_table) == 2
    assert not bm.can_allocate(_req("b", [1, 2, 3, 4]))  # 2 fresh blocks would leave 0 < 2
    bm.append_slots(r, 3)
    assert len(r.block_table) == 3 and bm.num_free_blocks == 1
    assert bm.can_append_slots(r, 5) and not bm.can_append_slots(r, 7)
    with pytest.raises(RuntimeError, match="cannot append"):
        bm.append_slots(r, 7)


def test_disabled_prefix_caching_never_hits():
    bm = BlockManager(8, block_size=2, enable_prefix_caching=False)
    a = _req("a", range(6))
    bm.allocate(a)
    _compute_all(bm, a)
    b = _req("b", range(6))
    bm.allocate(b)
    assert b.num_computed_tokens == 0 and bm.num_cached_blocks == 0 and bm.prefix_hits == 0


def test_share_increments_refcounts():
    bm = BlockManager(8, block_size=2)
    a = _req("a", range(4))
    bm.allocate(a)
    b = _req("b", [0, 1, 2, 3, 9, 9, 9])
    bm.share(b, a.block_table, 4)
    assert b.num_computed_tokens == 4 and [bm.ref_counts[x] for x in a.block_table] == [2, 2]
    with pytest.raises(ValueError, match="whole blocks"):
        bm.share(_req("c", range(5)), a.block_table, 3)
    bm.append_slots(b, 3)
    b.num_computed_tokens = 6
    bm.cache_blocks(b)  # the shared blocks were never hashed: nothing can be chained after them
    assert bm.num_cached_blocks == 0
    bm.free(a)
    bm.free(b)
    assert all(rc == 0 for rc in bm.ref_counts)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_blocks"):
        BlockManager(0)
    with pytest.raises(ValueError, match="watermark"):
        BlockManager(4, watermark=1.0)
    bm = BlockManager(2, block_size=2, watermark=0.0)
    big = _req("big", range(7))
    assert not bm.can_allocate(big)
    with pytest.raises(RuntimeError, match="cannot allocate"):
        bm.allocate(big)
    with pytest.raises(RuntimeError, match="released"):
        bm.release([0])
