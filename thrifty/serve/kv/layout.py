"""The bytes a token's KV costs: one home for the fact that the engine, its pool sizing, the simulator's model
specs and the claims all use.

The paged cache (``PagedKVCache``, shape ``[layers, 2, blocks, block_size, kv_heads, head_dim]``) stores one key and
one value vector per layer and KV head for every token, so a token costs ``2 * layers * kv_heads * head_dim``
elements. Pure Python: the simulator uses it without torch.
"""

from __future__ import annotations

__all__ = ["kv_bytes_per_token"]


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    """Bytes of one token's keys and values in every layer: ``2 x layers x KV heads x head dim x element bytes``."""
    return 2 * num_layers * num_kv_heads * head_dim * dtype_bytes
