"""KV-cache bookkeeping for serving (pure Python)."""

from thrifty.serve.kv.block_manager import BlockManager
from thrifty.serve.kv.layout import kv_bytes_per_token

__all__ = ["BlockManager", "kv_bytes_per_token"]
