"""Models and a tokenizer for tests, claims and benchmarks that need a Llama but not a trained one.

Timing does not depend on the weights, and correctness tests compare the engine with a dense forward of the same
weights, so a random Llama serves both; a byte-level tokenizer gives text I/O without training a vocabulary. Save
either with :func:`thrifty.serve.model.loader.save_pretrained` to get a directory ``thrifty serve --model`` and
``transformers`` load.
"""

from __future__ import annotations

from typing import Any

import torch

from thrifty.serve.model.llama import LlamaConfig, LlamaForCausalLM
from thrifty.serve.model.loader import TextTokenizer

__all__ = ["RANDOM_LLAMA_CONFIG", "byte_tokenizer", "random_llama"]

# ~22M parameters: big enough that a prefill chunk costs real time on a CPU core (the measured serving claims)
RANDOM_LLAMA_CONFIG: dict[str, Any] = {
    "vocab_size": 4096,
    "hidden_size": 512,
    "intermediate_size": 1408,
    "num_hidden_layers": 6,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "max_position_embeddings": 2048,
    "eos_token_id": 0,
    "bos_token_id": None,
}


def random_llama(
    seed: int = 0, std: float = 0.02, dtype: torch.dtype = torch.float32, **overrides: Any
) -> LlamaForCausalLM:
    """A randomly initialised Llama of ``RANDOM_LLAMA_CONFIG`` updated with ``overrides`` (``LlamaConfig`` fields):
    matrices normal with ``std`` (Hugging Face's init: 0.02), unit norms; in ``dtype``, eval mode, no gradients."""
    config = LlamaConfig(**{**RANDOM_LLAMA_CONFIG, **overrides})
    gen = torch.Generator().manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model.to(dtype).eval().requires_grad_(False)


def byte_tokenizer() -> TextTokenizer:
    """A byte-level tokenizer without merges: ``<eos>`` is id 0 and byte ``b`` is id ``b + 1`` (vocab 257), so any
    text round-trips and a generated id sequence may end inside a multi-byte character."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    byte_of = _bytes_to_unicode()
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet(), key=lambda ch: byte_of[ch])
    vocab = {"<eos>": 0, **{ch: i + 1 for i, ch in enumerate(alphabet)}}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<eos>"])
    return TextTokenizer(tok, eos_token_ids=[0])


def _bytes_to_unicode() -> dict[str, int]:
    """GPT-2's byte -> printable character map (the ``ByteLevel`` pre-tokenizer's), inverted: character -> byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}
