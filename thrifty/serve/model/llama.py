"""A Llama-style decoder in plain PyTorch whose forward runs a flat batch over a paged KV cache.

Architecture (Llama, arXiv 2302.13971; Llama 2, arXiv 2307.09288): pre-norm blocks with RMSNorm, rotary position
embeddings (RoPE, rotate-half convention and ``rope_theta`` as in Hugging Face's ``LlamaForCausalLM``), SwiGLU MLP
``down(silu(gate(x)) * up(x))`` and grouped-query attention (query head ``h`` reads key/value head
``h // (num_attention_heads / num_key_value_heads)``).

Serving forward (SARATHI, arXiv 2308.16369): ``forward(meta, cache)`` takes the tokens of many sequences at once,
prefill chunks and decodes mixed, as ONE flat batch; every linear layer is one matmul over all of them (the fused
GEMM that lets decodes piggyback on a prefill chunk). Attention writes the new keys/values into their cache slots,
then for each sequence attends over everything it has in the cache, with the causal mask offset by the tokens cached
before this chunk. All single-token sequences attend in one batched SDPA call over padded block tables, so a step of
32 decodes makes one attention call per layer, not 32. Query and key/value projections are fused into one
``qkv_proj`` matmul and gate/up into one ``gate_up_proj``; the checkpoint names stay Hugging Face's
(``load_hf_state_dict`` / ``hf_state_dict``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thrifty.serve.kv.layout import kv_bytes_per_token
from thrifty.serve.kv.paged_cache import AttentionMetadata, PagedKVCache

__all__ = ["LlamaConfig", "LlamaForCausalLM"]


@dataclass
class LlamaConfig:
    """The fields of Hugging Face's ``LlamaConfig`` this model uses (same names, same defaults where it matters)."""

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    attention_bias: bool = False
    mlp_bias: bool = False
    hidden_act: str = "silu"
    tie_word_embeddings: bool = False
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of num_key_value_heads "
                f"({self.num_key_value_heads})"
            )
        if self.hidden_act != "silu":
            raise ValueError(f"only hidden_act='silu' (SwiGLU) is supported, got {self.hidden_act!r}")
        rope_type = (self.rope_scaling or {}).get("rope_type", (self.rope_scaling or {}).get("type", "default"))
        if rope_type not in ("default", "linear", "llama3"):
            raise ValueError(f"rope scaling {rope_type!r} is not supported (default, linear, llama3 are)")

    def kv_bytes_per_token(self, dtype: torch.dtype) -> int:
        """Bytes of one token's keys and values in every layer, cached in ``dtype``."""
        return kv_bytes_per_token(self.num_hidden_layers, self.num_key_value_heads, self.head_dim, dtype.itemsize)

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        if self.eos_token_id is None:
            return ()
        return tuple(self.eos_token_id) if isinstance(self.eos_token_id, list) else (self.eos_token_id,)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LlamaConfig:
        """From a Hugging Face ``config.json`` dict (``rope_theta``/``rope_scaling`` or transformers 5's
        ``rope_parameters``); keys this model does not use are kept in ``extra``."""
        d = dict(d)
        model_type = d.get("model_type", "llama")
        if model_type not in ("llama", "mistral", "thrifty_llama"):
            raise ValueError(f"not a Llama-style config: model_type {model_type!r}")
        rope = d.pop("rope_parameters", None)
        if rope:
            d.setdefault("rope_theta", rope.get("rope_theta", 10000.0))
            if rope.get("rope_type", "default") != "default":
                d.setdefault("rope_scaling", {k: v for k, v in rope.items() if k != "rope_theta"})
        if d.get("sliding_window") is not None:
            raise ValueError("sliding-window attention is not supported")
        names = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in names}, extra={k: v for k, v in d.items() if k not in names})

    def to_dict(self) -> dict[str, Any]:
        """A Hugging Face-loadable ``config.json`` dict."""
        d = asdict(self)
        extra = d.pop("extra")
        d = {**extra, **d, "model_type": "llama", "architectures": ["LlamaForCausalLM"]}
        return d


def rope_inv_freq(config: LlamaConfig) -> Tensor:
    """``1 / theta^(2i/d)`` in float32 (as Hugging Face computes it), rescaled for ``linear`` / ``llama3`` scaling."""
    dim = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    scaling = config.rope_scaling or {}
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "linear":
        inv_freq = inv_freq / scaling["factor"]
    elif rope_type == "llama3":
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
        inv_freq = torch.where(medium, smoothed, scaled)
    return inv_freq


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * weight`` (half-precision inputs are normalised in float32, as in HF)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            h = x.float()
            return self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class LlamaAttention(nn.Module):
    def __init__(self, config: LlamaConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.group = self.num_heads // self.num_kv_heads
        self.qkv_proj = nn.Linear(
            config.hidden_size, (self.num_heads + 2 * self.num_kv_heads) * self.head_dim, bias=config.attention_bias
        )
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=config.attention_bias)

    def _qkv(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        heads = self.qkv_proj(x).unflatten(-1, (self.num_heads + 2 * self.num_kv_heads, self.head_dim))
        qk, v = heads.split([self.num_heads + self.num_kv_heads, self.num_kv_heads], -2)
        # RoPE on queries and keys at once: rotate_half(x) * sin == roll(x, d / 2) * sin_signed (``_rope`` negates
        # the first half of sin), bit for bit, in one op instead of three
        qk = qk * cos + qk.roll(self.head_dim // 2, -1) * sin
        q, k = qk.split([self.num_heads, self.num_kv_heads], -2)
        return q, k, v

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, meta: AttentionMetadata, cache: PagedKVCache) -> Tensor:
        """``x`` ``[T, hidden]``; ``cos``/``sin`` ``[T, 1, head_dim]`` (``sin``'s first half negated, see ``_rope``)."""
        q, k, v = self._qkv(x, cos, sin)
        cache.write(self.layer_idx, meta.slot_mapping, k, v)
        nkv, g, hd = self.num_kv_heads, self.group, self.head_dim
        out = None
        if meta.decode_seqs:
            # One batched call for every single-token sequence; query heads of one kv head fold into the query axis.
            idx = meta.decode_token_idx
            all_decode = len(meta.decode_seqs) == len(meta.query_lens)
            qd = (q if all_decode else q.index_select(0, idx)).view(-1, nkv, g, hd)
            bt = meta.decode_block_tables
            span = (bt.shape[0], -1, nkv, hd)  # [D, W * block_size, nkv, hd]
            kd, vd = cache.gather(self.layer_idx, bt.flatten())
            kd, vd = kd.view(span).transpose(1, 2), vd.view(span).transpose(1, 2)
            bias = meta.decode_bias(qd.dtype)  # the bool mask as SDPA would convert it, once per step
            od = F.scaled_dot_product_attention(qd, kd, vd, attn_mask=bias).reshape(-1, nkv * g * hd)
            if all_decode:
                return self.o_proj(od)
            out = x.new_empty(x.shape[0], nkv * g * hd)
            out.index_copy_(0, idx, od)
        if out is None:
            out = x.new_empty(x.shape[0], nkv * g * hd)
        for i in meta.prefill_seqs:
            qs, ql, ctx = meta.query_starts[i], meta.query_lens[i], meta.context_lens[i]
            if ctx == ql:  # nothing cached before this chunk: its own keys/values are the whole context
                ks, vs = k[qs : qs + ql], v[qs : qs + ql]
            else:
                ks, vs = cache.gather(self.layer_idx, meta.block_tables[i, : meta.num_blocks[i]])
                ks, vs = ks.flatten(0, 1)[:ctx], vs.flatten(0, 1)[:ctx]
            qi = q[qs : qs + ql].view(ql, nkv, g, hd).permute(1, 2, 0, 3).reshape(nkv, g * ql, hd)
            mask = torch.arange(ctx, device=x.device)[None, :] <= torch.arange(ctx - ql, ctx, device=x.device)[:, None]
            oi = F.scaled_dot_product_attention(
                qi, ks.transpose(0, 1), vs.transpose(0, 1), attn_mask=mask.repeat(g, 1)
            )  # [nkv, g * ql, hd]
            out[qs : qs + ql] = oi.view(nkv, g, ql, hd).permute(2, 0, 1, 3).reshape(ql, -1)
        return self.o_proj(out)

    def forward_dense(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """Plain causal attention over ``x`` ``[B, S, hidden]`` (training and reference path; no cache)."""
        q, k, v = self._qkv(x, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if self.group > 1:
            k = k.repeat_interleave(self.group, dim=1)
            v = v.repeat_interleave(self.group, dim=1)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(o.transpose(1, 2).flatten(2))


class LlamaMLP(nn.Module):
    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.gate_up_proj = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=config.mlp_bias)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: LlamaConfig, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(config, layer_idx)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, meta: AttentionMetadata, cache: PagedKVCache) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, meta, cache)
        return x + self.mlp(self.post_attention_layernorm(x))

    def forward_dense(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.self_attn.forward_dense(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaForCausalLM(nn.Module):
    """Llama decoder with a language-model head; ``forward`` serves a flat paged batch, ``forward_dense`` trains."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.register_buffer("inv_freq", rope_inv_freq(config), persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    def _rope(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """``cos`` and ``sin`` of the rotary angles, ``[..., 1, head_dim]``, with the first half of ``sin`` negated so
        that attention rotates by a roll instead of ``cat(-x2, x1)``."""
        freqs = positions.float()[..., None] * self.inv_freq.float()
        emb = torch.cat((freqs, freqs), dim=-1)
        sin = emb.sin()
        sin[..., : sin.shape[-1] // 2].neg_()
        return emb.cos().to(dtype).unsqueeze(-2), sin.to(dtype).unsqueeze(-2)

    def make_cache(self, num_blocks: int, block_size: int = 16, dtype: torch.dtype | None = None) -> PagedKVCache:
        """An empty paged KV cache for this model (``dtype`` defaults to the model's)."""
        c = self.config
        return PagedKVCache(
            c.num_hidden_layers,
            num_blocks,
            c.num_key_value_heads,
            c.head_dim,
            block_size,
            dtype or self.dtype,
            self.device,
        )

    def forward(self, meta: AttentionMetadata, cache: PagedKVCache, all_logits: bool = False) -> Tensor:
        """Logits ``[N, vocab]`` at the last token of each of the ``N`` sequences of the flat batch ``meta``
        (``[T, vocab]`` at every token with ``all_logits``), writing the batch's keys/values into ``cache``."""
        last = max(meta.context_lens) - 1  # the largest position of the batch, without a tensor reduction
        if last >= self.config.max_position_embeddings:
            raise ValueError(
                f"position {last} is beyond the model's context "
                f"(max_position_embeddings={self.config.max_position_embeddings})"
            )
        x = self.embed_tokens(meta.input_ids)
        cos, sin = self._rope(meta.positions, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, meta, cache)
        if not all_logits:
            x = x.index_select(0, meta.logits_indices)
        return self.lm_head(self.norm(x))

    def forward_dense(self, input_ids: Tensor) -> Tensor:
        """Logits ``[B, S, vocab]`` of ``input_ids`` ``[B, S]`` with plain causal attention (no cache)."""
        if input_ids.shape[-1] > self.config.max_position_embeddings:
            raise ValueError(
                f"{input_ids.shape[-1]} tokens exceed max_position_embeddings={self.config.max_position_embeddings}"
            )
        x = self.embed_tokens(input_ids)
        cos, sin = self._rope(torch.arange(input_ids.shape[-1], device=input_ids.device), x.dtype)
        for layer in self.layers:
            x = layer.forward_dense(x, cos, sin)
        return self.lm_head(self.norm(x))

    # Hugging Face checkpoint names <-> fused projections.
    def load_hf_state_dict(self, sd: Mapping[str, Tensor]) -> None:
        """Load a Hugging Face ``LlamaForCausalLM`` state dict (``model.layers.{i}.self_attn.q_proj.weight``, ...),
        fusing q/k/v and gate/up; raises on missing or unexpected tensors."""
        sd = dict(sd)
        own: dict[str, Tensor] = {}

        def take(name: str) -> Tensor:
            if name not in sd:
                raise KeyError(f"checkpoint is missing {name!r}")
            return sd.pop(name)

        own["embed_tokens.weight"] = take("model.embed_tokens.weight")
        own["norm.weight"] = take("model.norm.weight")
        if "lm_head.weight" in sd:
            own["lm_head.weight"] = sd.pop("lm_head.weight")
        elif self.config.tie_word_embeddings:
            own["lm_head.weight"] = own["embed_tokens.weight"]
        else:
            raise KeyError("checkpoint is missing 'lm_head.weight' and tie_word_embeddings is false")
        suffixes = ["weight"] + (["bias"] if self.config.attention_bias else [])
        for i in range(self.config.num_hidden_layers):
            p = f"model.layers.{i}."
            for s in suffixes:
                own[f"layers.{i}.self_attn.qkv_proj.{s}"] = torch.cat(
                    [take(f"{p}self_attn.{n}_proj.{s}") for n in "qkv"], 0
                )
                own[f"layers.{i}.self_attn.o_proj.{s}"] = take(f"{p}self_attn.o_proj.{s}")
            for s in ["weight"] + (["bias"] if self.config.mlp_bias else []):
                own[f"layers.{i}.mlp.gate_up_proj.{s}"] = torch.cat(
                    [take(f"{p}mlp.gate_proj.{s}"), take(f"{p}mlp.up_proj.{s}")], 0
                )
                own[f"layers.{i}.mlp.down_proj.{s}"] = take(f"{p}mlp.down_proj.{s}")
            own[f"layers.{i}.input_layernorm.weight"] = take(f"{p}input_layernorm.weight")
            own[f"layers.{i}.post_attention_layernorm.weight"] = take(f"{p}post_attention_layernorm.weight")
        leftover = [k for k in sd if not k.endswith("rotary_emb.inv_freq")]
        if leftover:
            raise KeyError(f"checkpoint has tensors this Llama does not use: {leftover[:5]}")
        with torch.no_grad():
            for name, param in self.state_dict().items():
                src = own[name]
                if src.shape != param.shape:
                    raise ValueError(f"{name}: checkpoint shape {tuple(src.shape)} != model shape {tuple(param.shape)}")
                param.copy_(src)

    def hf_state_dict(self) -> dict[str, Tensor]:
        """This model's weights under Hugging Face ``LlamaForCausalLM`` names (q/k/v and gate/up split again)."""
        c = self.config
        sd = {"model.embed_tokens.weight": self.embed_tokens.weight, "model.norm.weight": self.norm.weight}
        if not c.tie_word_embeddings:
            sd["lm_head.weight"] = self.lm_head.weight
        hd = c.head_dim
        split = [c.num_attention_heads * hd, c.num_key_value_heads * hd, c.num_key_value_heads * hd]
        for i, layer in enumerate(self.layers):
            p = f"model.layers.{i}."
            attn, mlp = layer.self_attn, layer.mlp
            for s in ["weight"] + (["bias"] if c.attention_bias else []):
                for n, t in zip("qkv", getattr(attn.qkv_proj, s).split(split, 0), strict=True):
                    sd[f"{p}self_attn.{n}_proj.{s}"] = t
                sd[f"{p}self_attn.o_proj.{s}"] = getattr(attn.o_proj, s)
            for s in ["weight"] + (["bias"] if c.mlp_bias else []):
                gate, up = getattr(mlp.gate_up_proj, s).chunk(2, 0)
                sd[f"{p}mlp.gate_proj.{s}"], sd[f"{p}mlp.up_proj.{s}"] = gate, up
                sd[f"{p}mlp.down_proj.{s}"] = getattr(mlp.down_proj, s)
            sd[f"{p}input_layernorm.weight"] = layer.input_layernorm.weight
            sd[f"{p}post_attention_layernorm.weight"] = layer.post_attention_layernorm.weight
        return {k: v.detach().contiguous() for k, v in sd.items()}
