"""KV-cache bookkeeping for serving (pure Python)."""

from thrifty.serve.kv.block_manager import BlockManager

__all__ = ["BlockManager"]
