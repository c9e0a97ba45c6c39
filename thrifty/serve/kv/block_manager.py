"""Paged-KV block manager with reference counts and hash-based prefix caching (vLLM / nano-vllm style).

The KV cache is split into ``num_blocks`` blocks of ``block_size`` token slots. A request's ``block_table`` lists
its blocks in order; a block may be shared by several requests (reference count). Rules:

* Every FULL block whose KV has been computed gets the chained hash ``hash((parent_hash, tuple(tokens)))``
  (``parent_hash`` is the previous block's, ``None`` for the first), registered in ``hash -> block``.
* A block whose reference count drops to zero goes to the free queue but keeps its hash and KV: allocating a
  request whose prompt starts with the same full blocks reuses them (a prefix hit). Fresh blocks are taken from
  the front of the free queue, so the least recently freed cached block is evicted first (LRU); blocks without a
  registered hash are put at the front, as they carry nothing worth keeping.
* A hit never covers the last known token: a request must compute at least one token to get logits, so a hit that
  would cover every token drops its last block, which is recomputed in a fresh block (vLLM v1). Hence a request
  only ever writes KV into blocks that it alone holds.
* ``prefix_queries`` / ``prefix_hits`` count tokens looked up and tokens actually served from reused blocks.

Invariant (checked by :meth:`check_invariants`): free + used = total, and every reference count is back to zero
once every request has been freed.
"""

from __future__ import annotations

from collections import OrderedDict

from thrifty.serve.sequence import Request

__all__ = ["BlockManager"]


class BlockManager:
    """Reference-counted KV blocks with LRU prefix caching.

    Args:
        num_blocks: blocks in the KV pool.
        block_size: token slots per block.
        enable_prefix_caching: hash full blocks and reuse them across requests.
        watermark: fraction of the pool that admission (:meth:`can_allocate`) keeps free, so that running requests
            can still grow (Sarathi-Serve / vLLM default 0.01). Growth (:meth:`can_append_slots`) ignores it.
    """

    def __init__(
        self,
        num_blocks: int,
        block_size: int = 16,
        enable_prefix_caching: bool = True,
        watermark: float = 0.01,
    ) -> None:
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        if not 0.0 <= watermark < 1.0:
            raise ValueError(f"watermark must lie in [0, 1), got {watermark}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.watermark = watermark
        self.watermark_blocks = int(watermark * num_blocks)
        self.ref_counts: list[int] = [0] * num_blocks
        self._hashes: list[int | None] = [None] * num_blocks
        self._tokens: list[tuple[int, ...] | None] = [None] * num_blocks
        self._hash_to_block: dict[int, int] = {}
        self._free: OrderedDict[int, None] = OrderedDict((b, None) for b in range(num_blocks))
        self._num_hashed: dict[str, int] = {}
        self.prefix_queries = 0
        self.prefix_hits = 0

    # ------------------------------------------------------------------ sizes
    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    @property
    def usage(self) -> float:
        """Fraction of blocks held by at least one request."""
        return self.num_used_blocks / self.num_blocks

    @property
    def num_cached_blocks(self) -> int:
        """Blocks holding a registered hash (in use or free)."""
        return len(self._hash_to_block)

    @property
    def capacity_tokens(self) -> int:
        return self.num_blocks * self.block_size

    def blocks_for(self, num_tokens: int) -> int:
        """Blocks needed to hold ``num_tokens`` token slots."""
        return -(-num_tokens // self.block_size)

    # ------------------------------------------------------------------ prefix matching
    def _match(self, req: Request) -> list[int]:
        """Blocks holding the longest cached prefix of ``req``'s known tokens, never covering its last token."""
        if not self.enable_prefix_caching:
            return []
        tokens = req.all_token_ids
        bs = self.block_size
        hits: list[int] = []
        parent: int | None = None
        for i in range((len(tokens) - 1) // bs):
            chunk = tuple(tokens[i * bs : (i + 1) * bs])
            h = hash((parent, chunk))
            block = self._hash_to_block.get(h)
            if block is None or self._tokens[block] != chunk:
                break
            hits.append(block)
            parent = h
        return hits

    def _take_free(self) -> int:
        block, _ = self._free.popitem(last=False)
        self._forget(block)
        self.ref_counts[block] = 1
        return block

    def _forget(self, block: int) -> None:
        h = self._hashes[block]
        if h is not None and self._hash_to_block.get(h) == block:
            del self._hash_to_block[h]
        self._hashes[block] = None
        self._tokens[block] = None

    def _fits(self, num_new: int, num_revived: int, watermark_blocks: int) -> bool:
        return len(self._free) - num_revived - num_new >= watermark_blocks

    # ------------------------------------------------------------------ allocation
    def can_allocate(self, req: Request, num_tokens: int | None = None) -> bool:
        """Whether :meth:`allocate` would succeed while leaving the watermark free."""
        num_tokens = req.num_tokens if num_tokens is None else num_tokens
        hits = self._match(req)
        revived = sum(1 for b in hits if self.ref_counts[b] == 0)
        num_new = max(self.blocks_for(num_tokens) - len(hits), 0)
        return self._fits(num_new, revived, self.watermark_blocks)

    def allocate(self, req: Request, num_tokens: int | None = None) -> None:
        """Give a request without blocks its table: cached prefix blocks first, then fresh blocks up to
        ``num_tokens`` slots (default: all its known tokens). Sets ``num_computed_tokens`` and
        ``num_cached_tokens`` to the hit length."""
        if req.block_table:
            raise ValueError(f"request {req.request_id!r} already holds {len(req.block_table)} blocks")
        num_tokens = req.num_tokens if num_tokens is None else num_tokens
        hits = self._match(req)
        revived = sum(1 for b in hits if self.ref_counts[b] == 0)
        num_new = max(self.blocks_for(num_tokens) - len(hits), 0)
        if not self._fits(num_new, revived, 0):
            raise RuntimeError(
                f"cannot allocate {num_new + revived} blocks for {req.request_id!r}: {len(self._free)} free"
            )
        for b in hits:
            if self.ref_counts[b] == 0:
                del self._free[b]
            self.ref_counts[b] += 1
        req.block_table = hits + [self._take_free() for _ in range(num_new)]
        num_hit_tokens = len(hits) * self.block_size
        req.num_computed_tokens = num_hit_tokens
        req.num_cached_tokens = num_hit_tokens
        self._num_hashed[req.request_id] = len(hits)
        if self.enable_prefix_caching:
            self.prefix_queries += req.num_tokens
            self.prefix_hits += num_hit_tokens

    def share(self, req: Request, blocks: list[int], num_tokens: int) -> None:
        """Start a request without blocks on already-computed shared blocks holding its first ``num_tokens``
        tokens (explicit prefix sharing, as BatchLLM's groups). ``num_tokens`` must fill whole blocks, so that the
        request writes only into blocks of its own."""
        if req.block_table:
            raise ValueError(f"request {req.request_id!r} already holds {len(req.block_table)} blocks")
        if num_tokens != len(blocks) * self.block_size or num_tokens >= req.num_tokens:
            raise ValueError(
                f"shared blocks must hold whole blocks of a strict prefix: {len(blocks)} blocks, {num_tokens} tokens,"
                f" request of {req.num_tokens} tokens, block size {self.block_size}"
            )
        for b in blocks:
            if self.ref_counts[b] < 1:
                raise ValueError(f"block {b} is free; only held blocks can be shared")
            self.ref_counts[b] += 1
        req.block_table = list(blocks)
        req.num_computed_tokens = num_tokens
        req.num_cached_tokens = num_tokens
        self._num_hashed[req.request_id] = len(blocks)

    def slots_needed(self, req: Request, num_new_tokens: int = 1) -> int:
        """Fresh blocks needed so that the table covers ``num_computed_tokens + num_new_tokens`` slots."""
        return max(self.blocks_for(req.num_computed_tokens + num_new_tokens) - len(req.block_table), 0)

    def can_append_slots(self, req: Request, num_new_tokens: int = 1) -> bool:
        """Whether a running request can grow by ``num_new_tokens`` slots (no watermark)."""
        return self.slots_needed(req, num_new_tokens) <= len(self._free)

    def append_slots(self, req: Request, num_new_tokens: int = 1) -> None:
        """Grow the table to cover ``num_computed_tokens + num_new_tokens`` slots."""
        need = self.slots_needed(req, num_new_tokens)
        if need > len(self._free):
            raise RuntimeError(f"cannot append {need} blocks for {req.request_id!r}: {len(self._free)} free")
        req.block_table.extend(self._take_free() for _ in range(need))

    def free(self, req: Request) -> None:
        """Release the request's blocks (last block first, so that its tail is evicted before its head)."""
        self.release(req.block_table)
        req.block_table = []
        self._num_hashed.pop(req.request_id, None)

    def release(self, blocks: list[int]) -> None:
        """Drop one reference to each block; blocks reaching zero join the free queue."""
        for b in reversed(blocks):
            if self.ref_counts[b] < 1:
                raise RuntimeError(f"block {b} released more often than it was held")
            self.ref_counts[b] -= 1
            if self.ref_counts[b] == 0:
                h = self._hashes[b]
                self._free[b] = None
                if h is None or self._hash_to_block.get(h) != b:
                    self._forget(b)
                    self._free.move_to_end(b, last=False)

    # ------------------------------------------------------------------ hashing
    def cache_blocks(self, req: Request) -> None:
        """Hash and register the request's full blocks whose KV is computed (call after each step)."""
        if not self.enable_prefix_caching:
            return
        bs = self.block_size
        start = self._num_hashed.get(req.request_id, 0)
        end = min(req.num_computed_tokens // bs, len(req.block_table))
        if end <= start:
            return
        parent = self._hashes[req.block_table[start - 1]] if start > 0 else None
        if start > 0 and parent is None:
            return  # the table starts on unhashed shared blocks: the chain cannot be continued
        tokens = req.all_token_ids
        for i in range(start, end):
            block = req.block_table[i]
            chunk = tuple(tokens[i * bs : (i + 1) * bs])
            h = hash((parent, chunk))
            if self._hashes[block] is None:
                self._hashes[block] = h
                self._tokens[block] = chunk
                self._hash_to_block.setdefault(h, block)
            parent = h
        self._num_hashed[req.request_id] = end

    def reset_prefix_cache(self) -> None:
        """Forget every hash (free cached blocks become plain free blocks)."""
        for b in range(self.num_blocks):
            self._hashes[b] = None
            self._tokens[b] = None
        self._hash_to_block.clear()
        self._num_hashed = dict.fromkeys(self._num_hashed, 0)

    # ------------------------------------------------------------------ checks
    def check_invariants(self) -> None:
        """Raise ``AssertionError`` if the free queue and reference counts disagree."""
        free = set(self._free)
        if len(free) != len(self._free):
            raise AssertionError("a block appears twice in the free queue")
        for b, rc in enumerate(self.ref_counts):
            if rc < 0 or (rc == 0) != (b in free):
                raise AssertionError(f"block {b}: ref count {rc}, in free queue {b in free}")
        for h, b in self._hash_to_block.items():
            if self._hashes[b] != h:
                raise AssertionError(f"hash map points at block {b} which holds another hash")

    def __repr__(self) -> str:
        return (
            f"BlockManager(num_blocks={self.num_blocks}, block_size={self.block_size}, free={self.num_free_blocks}, "
            f"cached={self.num_cached_blocks}, prefix_caching={self.enable_prefix_caching})"
        )
