"""The PyTorch side of serving: a Llama-style decoder over a paged KV cache and a local checkpoint loader and
writer (``thrifty.serve.model.testing`` has a random Llama and a byte tokenizer for tests and benchmarks)."""

from thrifty.serve.model.llama import LlamaConfig, LlamaForCausalLM
from thrifty.serve.model.loader import (
    DEFAULT_MODEL_DIR,
    TextTokenizer,
    load_llama,
    load_pretrained,
    load_tokenizer,
    save_pretrained,
)

__all__ = [
    "DEFAULT_MODEL_DIR",
    "LlamaConfig",
    "LlamaForCausalLM",
    "TextTokenizer",
    "load_llama",
    "load_pretrained",
    "load_tokenizer",
    "save_pretrained",
]
