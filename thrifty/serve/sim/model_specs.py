"""Shapes of decoder LLMs for the simulator: layers, widths, heads, vocabulary, and the KV bytes a token costs.

Values are those of each model's Hugging Face ``config.json`` (the same as Vidur's ``model_config.py`` where it
lists the model). ``sliding_window`` caps the attention context (Mistral-7B v0.1 attends to 4,096 tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

from thrifty.serve.kv.layout import kv_bytes_per_token

__all__ = ["MODELS", "ModelSpec", "UnknownModelError", "get_model"]


class UnknownModelError(KeyError):
    """An unknown model name; the message lists the known ones."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class ModelSpec:
    """A Llama-style decoder (RMSNorm, RoPE, SwiGLU, grouped-query attention) in 16-bit weights."""

    key: str
    name: str
    num_layers: int
    hidden: int
    num_heads: int
    num_kv_heads: int
    intermediate: int
    vocab: int
    max_position: int
    sliding_window: int | None = None
    dtype_bytes: int = 2

    @property
    def head_dim(self) -> int:
        return self.hidden // self.num_heads

    @property
    def qkv_out(self) -> int:
        """Output width of the fused QKV projection."""
        return (self.num_heads + 2 * self.num_kv_heads) * self.head_dim

    def layer_params(self) -> int:
        """Parameters of one decoder layer: QKV, O, gate+up, down projections and the two norms."""
        d = self.hidden
        return d * self.qkv_out + d * d + 3 * d * self.intermediate + 2 * d

    def num_params(self) -> int:
        """All parameters: embedding, layers, final norm and an untied LM head."""
        return self.num_layers * self.layer_params() + 2 * self.vocab * self.hidden + self.hidden

    def weight_bytes(self) -> int:
        return self.num_params() * self.dtype_bytes

    def kv_bytes_per_token(self) -> int:
        """Keys and values of one token in all layers (``thrifty.serve.kv.kv_bytes_per_token``)."""
        return kv_bytes_per_token(self.num_layers, self.num_kv_heads, self.head_dim, self.dtype_bytes)

    def attention_context(self, context: int) -> int:
        """Tokens a query attends to at ``context`` (capped by the sliding window)."""
        return context if self.sliding_window is None else min(context, self.sliding_window)


MODELS: dict[str, ModelSpec] = {
    m.key: m
    for m in (
        ModelSpec("llama2-7b", "Llama-2-7B", 32, 4096, 32, 32, 11008, 32000, 4096),
        ModelSpec("llama3-8b", "Llama-3-8B", 32, 4096, 32, 8, 14336, 128256, 8192),
        ModelSpec("mistral-7b", "Mistral-7B-v0.1", 32, 4096, 32, 8, 14336, 32000, 32768, sliding_window=4096),
        ModelSpec("llama-13b", "LLaMA-13B", 40, 5120, 40, 40, 13824, 32000, 2048),
        ModelSpec("llama2-13b", "Llama-2-13B", 40, 5120, 40, 40, 13824, 32000, 4096),
        ModelSpec("llama-33b", "LLaMA-33B", 60, 6656, 52, 52, 17920, 32000, 2048),
        ModelSpec("yi-34b", "Yi-34B", 60, 7168, 56, 8, 20480, 64000, 4096),
        ModelSpec("llama2-70b", "Llama-2-70B", 80, 8192, 64, 8, 28672, 32000, 4096),
    )
}


def get_model(name: str | ModelSpec) -> ModelSpec:
    """The ``ModelSpec`` named ``name`` (its key, case-insensitive, e.g. ``mistral-7b``)."""
    if isinstance(name, ModelSpec):
        return name
    try:
        return MODELS[name.lower()]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None
