"""The paged KV cache and the attention metadata of one flat batch (PagedAttention, vLLM, arXiv 2309.06180).

The cache is one tensor ``[num_layers, 2, num_blocks, block_size, num_kv_heads, head_dim]`` (index 0 keys, 1 values).
A sequence owns the blocks of its block table; its token at position ``p`` lives in slot
``block_table[p // block_size] * block_size + p % block_size`` of the flattened ``[num_blocks * block_size]`` axis.
The block manager (``thrifty.serve.kv.block_manager``) decides which blocks a sequence owns; this module only stores
and reads the tensors.

``AttentionMetadata.build`` turns a list of :class:`SeqChunk` (the tokens each sequence computes this step, where its
chunk starts, its block table) into the flat batch the model consumes: token ids, positions, slot mapping, and the
per-sequence query starts and context lengths. Sequences computing one token (decodes, or one-token prefill chunks)
are grouped so that the model attends for all of them in one batched call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["AttentionMetadata", "PagedKVCache", "SeqChunk"]


class PagedKVCache:
    """Keys and values of every layer in fixed-size blocks: ``kv[layer, 0 | 1, block, offset, kv_head, :]``."""

    def __init__(
        self,
        num_layers: int,
        num_blocks: int,
        num_kv_heads: int,
        head_dim: int,
        block_size: int = 16,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        for name, value in (
            ("num_layers", num_layers),
            ("num_blocks", num_blocks),
            ("num_kv_heads", num_kv_heads),
            ("head_dim", head_dim),
            ("block_size", block_size),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.kv = torch.zeros(num_layers, 2, num_blocks, block_size, num_kv_heads, head_dim, dtype=dtype, device=device)
        # per-layer views, made once (indexing ``kv`` on every call is a visible cost of a batch-1 decode step)
        self._layers = [(self.kv[i, 0], self.kv[i, 1]) for i in range(num_layers)]
        self._pairs = list(self.kv.unbind(0))
        flat = (-1, num_kv_heads, head_dim)
        self._slots = [(k.view(flat), v.view(flat)) for k, v in self._layers]

    @property
    def num_slots(self) -> int:
        return self.num_blocks * self.block_size

    def nbytes(self) -> int:
        return self.kv.numel() * self.kv.element_size()

    def layer(self, layer: int) -> tuple[Tensor, Tensor]:
        """Keys and values of ``layer``, each ``[num_blocks, block_size, num_kv_heads, head_dim]`` (views)."""
        return self._layers[layer]

    def gather(self, layer: int, blocks: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of ``layer`` in ``blocks`` (1-D ids), each ``[len(blocks), block_size, num_kv_heads,
        head_dim]``, copied by one ``index_select`` for both."""
        return self._pairs[layer].index_select(1, blocks).unbind(0)

    def write(self, layer: int, slot_mapping: Tensor, k: Tensor, v: Tensor) -> None:
        """Store ``k``/``v`` (``[T, num_kv_heads, head_dim]``) of ``T`` tokens into their slots."""
        keys, values = self._slots[layer]
        keys.index_copy_(0, slot_mapping, k)
        values.index_copy_(0, slot_mapping, v)


@dataclass(frozen=True)
class SeqChunk:
    """One sequence's part of a step: compute ``token_ids`` at positions ``start, start + 1, ...``.

    ``block_table`` must cover positions ``[0, start + len(token_ids))``; the cache already holds positions
    ``[0, start)`` (computed earlier or shared through the prefix cache).
    """

    token_ids: Sequence[int]
    start: int
    block_table: Sequence[int]


@dataclass
class AttentionMetadata:
    """A flat batch of ``T`` tokens from ``N`` sequences (SARATHI's fused batch of prefill chunks and decodes).

    ``query_starts[i]``/``query_lens[i]``: where sequence ``i``'s tokens sit in the flat batch; ``context_lens[i]``:
    its tokens in the cache after this step (earlier ones plus this chunk); ``block_tables[i, :num_blocks[i]]``: the
    blocks holding them (rows padded with block 0). ``logits_indices[i]``: the flat index of
    sequence ``i``'s last token. Single-token sequences (``decode_seqs``) attend in one batched call over their block
    tables padded to ``decode_block_tables`` and masked by ``decode_mask``; the others (``prefill_seqs``) one at a
    time with a causal mask offset by the tokens already cached.
    """

    input_ids: Tensor
    positions: Tensor
    slot_mapping: Tensor
    query_starts: list[int]
    query_lens: list[int]
    context_lens: list[int]
    block_tables: Tensor
    num_blocks: list[int]
    logits_indices: Tensor
    decode_seqs: list[int]
    decode_token_idx: Tensor | None
    decode_block_tables: Tensor | None
    decode_mask: Tensor | None
    prefill_seqs: list[int]
    _biases: dict[torch.dtype, Tensor] = field(default_factory=dict, repr=False, compare=False)

    def decode_bias(self, dtype: torch.dtype) -> Tensor | None:
        """``decode_mask`` as the additive bias attention applies (0 where attended, ``-inf`` elsewhere) in
        ``dtype``, made once per batch rather than converted by every layer's attention call."""
        if self.decode_mask is None:
            return None
        bias = self._biases.get(dtype)
        if bias is None:
            bias = torch.zeros(self.decode_mask.shape, dtype=dtype, device=self.decode_mask.device)
            bias = self._biases[dtype] = bias.masked_fill_(~self.decode_mask, float("-inf"))
        return bias

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.numel())

    @classmethod
    def build(
        cls,
        chunks: Sequence[SeqChunk],
        block_size: int,
        num_slots: int | None = None,
        device: torch.device | str = "cpu",
    ) -> AttentionMetadata:
        """Flatten ``chunks`` (in order) into one batch; checks that every block table covers its chunk.

        The integer arrays are computed in Python and turned into tensors by three ``torch.tensor`` calls (one for
        the per-token arrays, one for the block tables, one for the per-sequence indices): a decode step of a few
        sequences is dominated by per-op overhead, not by arithmetic."""
        if not chunks:
            raise ValueError("a batch needs at least one sequence chunk")
        bs = block_size
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        query_starts, query_lens, context_lens, num_blocks = [], [], [], []
        for i, c in enumerate(chunks):
            n, start, table = len(c.token_ids), c.start, c.block_table
            if n < 1 or start < 0:
                raise ValueError(f"chunk {i}: needs >= 1 token and start >= 0, got {n} tokens at start {start}")
            end = start + n
            needed = -(-end // bs)
            if len(table) < needed:
                raise ValueError(
                    f"chunk {i}: positions up to {end} need {needed} blocks of {bs}, the block table has {len(table)}"
                )
            query_starts.append(len(ids))
            query_lens.append(n)
            context_lens.append(end)
            num_blocks.append(needed)
            ids.extend(c.token_ids)
            if n == 1:
                positions.append(start)
                slots.append(table[start // bs] * bs + start % bs)
            else:
                positions.extend(range(start, end))
                for b in range(start // bs, needed):  # slot = table[p // bs] * bs + p % bs, one block at a time
                    shift = table[b] * bs - b * bs
                    slots.extend(range(shift + max(start, b * bs), shift + min(end, (b + 1) * bs)))
        max_blocks = max(num_blocks)
        rows = [list(c.block_table[:nb]) + [0] * (max_blocks - nb) for c, nb in zip(chunks, num_blocks, strict=True)]
        if num_slots is not None and max(max(r) for r in rows) * bs >= num_slots:
            raise ValueError(f"a block table refers to a block beyond the cache ({num_slots // bs} blocks)")
        flat = torch.tensor([ids, positions, slots], dtype=torch.long, device=device)
        table = torch.tensor(rows, dtype=torch.long, device=device)
        decode_seqs = [i for i, n in enumerate(query_lens) if n == 1]
        prefill_seqs = [i for i, n in enumerate(query_lens) if n > 1]
        per_seq = [s + n - 1 for s, n in zip(query_starts, query_lens, strict=True)]
        decode_token_idx = decode_block_tables = decode_mask = None
        if decode_seqs:
            per_seq += [query_starts[i] for i in decode_seqs]
            per_seq += [context_lens[i] for i in decode_seqs]
        small = torch.tensor(per_seq, dtype=torch.long, device=device)
        n_seqs, n_dec = len(chunks), len(decode_seqs)
        if decode_seqs:
            decode_token_idx = small[n_seqs : n_seqs + n_dec]
            ctx = small[n_seqs + n_dec :]
            width = -(-max(context_lens[i] for i in decode_seqs) // bs)
            if n_dec == n_seqs:
                decode_block_tables = table[:, :width]
            else:
                decode_block_tables = table[decode_token_idx.new_tensor(decode_seqs), :width]
            decode_mask = (torch.arange(width * bs, device=device)[None, :] < ctx[:, None])[:, None, None, :]
        return cls(
            input_ids=flat[0],
            positions=flat[1],
            slot_mapping=flat[2],
            query_starts=query_starts,
            query_lens=query_lens,
            context_lens=context_lens,
            block_tables=table,
            num_blocks=num_blocks,
            logits_indices=small[:n_seqs],
            decode_seqs=decode_seqs,
            decode_token_idx=decode_token_idx,
            decode_block_tables=decode_block_tables,
            decode_mask=decode_mask,
            prefill_seqs=prefill_seqs,
        )
