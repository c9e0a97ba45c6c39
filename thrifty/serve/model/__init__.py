"""The PyTorch side of serving: a Llama-style decoder over a paged KV cache and a local checkpoint loader."""

from thrifty.serve.model.llama import LlamaConfig, LlamaForCausalLM
from thrifty.serve.model.loader import DEFAULT_MODEL_DIR, TextTokenizer, load_llama, load_pretrained, load_tokenizer

__all__ = [
    "DEFAULT_MODEL_DIR",
    "LlamaConfig",
    "LlamaForCausalLM",
    "TextTokenizer",
    "load_llama",
    "load_pretrained",
    "load_tokenizer",
]
