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
from dataclasses import dataclass

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
        """Flatten ``chunks`` (in order) into one batch; checks that every block table covers its chunk."""
        if not chunks:
            raise ValueError("a batch needs at least one sequence chunk")
        ids: list[int] = []
        query_starts, query_lens, context_lens = [], [], []
        for i, c in enumerate(chunks):
            n = len(c.token_ids)
            if n < 1 or c.start < 0:
                raise ValueError(f"chunk {i}: needs >= 1 token and start >= 0, got {n} tokens at start {c.start}")
            needed = -(-(c.start + n) // block_size)
            if len(c.block_table) < needed:
                raise ValueError(
                    f"chunk {i}: positions up to {c.start + n} need {needed} blocks of {block_size}, "
                    f"the block table has {len(c.block_table)}"
                )
            query_starts.append(len(ids))
            query_lens.append(n)
            context_lens.append(c.start + n)
            ids.extend(c.token_ids)
        num_blocks = [-(-ctx // block_size) for ctx in context_lens]
        max_blocks = max(num_blocks)
        rows = [list(c.block_table[:nb]) + [0] * (max_blocks - nb) for c, nb in zip(chunks, num_blocks, strict=True)]
        table = torch.tensor(rows, dtype=torch.long)
        if num_slots is not None and table.numel() and int(table.max()) * block_size >= num_slots:
            raise ValueError(f"a block table refers to a block beyond the cache ({num_slots // block_size} blocks)")
        lens = torch.tensor(query_lens, dtype=torch.long)
        seq_of_token = torch.repeat_interleave(torch.arange(len(chunks)), lens)
        starts = torch.tensor([c.start for c in chunks], dtype=torch.long)
        qstarts = torch.tensor(query_starts, dtype=torch.long)
        positions = torch.arange(len(ids)) - qstarts[seq_of_token] + starts[seq_of_token]
        slot_mapping = table[seq_of_token, positions // block_size] * block_size + positions % block_size
        decode_seqs = [i for i, n in enumerate(query_lens) if n == 1]
        prefill_seqs = [i for i, n in enumerate(query_lens) if n > 1]
        decode_token_idx = decode_block_tables = decode_mask = None
        if decode_seqs:
            sel = torch.tensor(decode_seqs, dtype=torch.long)
            decode_token_idx = qstarts[sel]
            ctx = torch.tensor([context_lens[i] for i in decode_seqs], dtype=torch.long)
            width = -(-int(ctx.max()) // block_size)
            decode_block_tables = table[sel, :width]
            decode_mask = (torch.arange(width * block_size)[None, :] < ctx[:, None])[:, None, None, :]
        return cls(
            input_ids=torch.tensor(ids, dtype=torch.long, device=device),
            positions=positions.to(device),
            slot_mapping=slot_mapping.to(device),
            query_starts=query_starts,
            query_lens=query_lens,
            context_lens=context_lens,
            block_tables=table.to(device),
            num_blocks=num_blocks,
            logits_indices=(qstarts + lens - 1).to(device),
            decode_seqs=decode_seqs,
            decode_token_idx=None if decode_token_idx is None else decode_token_idx.to(device),
            decode_block_tables=None if decode_block_tables is None else decode_block_tables.to(device),
            decode_mask=None if decode_mask is None else decode_mask.to(device),
            prefill_seqs=prefill_seqs,
        )
