"""A small causal transformer character LM on the interpreter's own standard library.

A real language-modelling workload (attention, LayerNorm, embeddings, a 129-way softmax) that
runs offline on CPUs: the corpus is ``thrifty.data.stdlib_text``. The seed fixes the initial
weights and the training windows; validation is a fixed set of windows of the validation files.
Weights and window positions are drawn on the CPU whatever the ``device``; the model and the
corpus then live on ``device``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thrifty.bench.workloads.base import Task
from thrifty.data.stdlib_text import load_stdlib_corpus

__all__ = ["EVAL_BATCH_SIZE", "CharTransformer", "make"]

# Validation windows per evaluation batch; fixed so the validation set does not change with batch_size.
EVAL_BATCH_SIZE = 32


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_head, c // self.n_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x)) with a 4x GELU MLP."""

    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_head)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.proj = nn.Linear(4 * d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.proj(F.gelu(self.fc(self.ln2(x))))


class CharTransformer(nn.Module):
    """GPT-style decoder: token + learned positional embeddings, pre-LN blocks, final LN, linear head."""

    def __init__(self, vocab_size: int, context: int, n_layer: int, d_model: int, n_head: int):
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_head ({n_head})")
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, idx: Tensor) -> Tensor:
        x = self.tok(idx) + self.pos.weight[: idx.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def _build(
    vocab_size: int,
    context: int,
    n_layer: int,
    d_model: int,
    n_head: int,
    tie: bool,
    generator: torch.Generator,
) -> CharTransformer:
    """The model with GPT-2's init drawn from ``generator``, built on the meta device (no global RNG).

    Weights ~ N(0, 0.02), residual output projections ~ N(0, 0.02 / sqrt(2 n_layer)), biases 0,
    LayerNorm (1, 0). Tying happens after materialisation, since ``to_empty`` would untie.
    """
    with torch.device("meta"):
        model = CharTransformer(vocab_size, context, n_layer, d_model, n_head)
    model.to_empty(device="cpu")
    if tie:
        model.head.weight = model.tok.weight
    residual_std = 0.02 / math.sqrt(2 * n_layer)
    for name, module in model.named_modules():
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding | nn.Linear) and not (tie and name == "head"):
            std = residual_std if name.endswith(".proj") else 0.02
            nn.init.normal_(module.weight, 0.0, std, generator=generator)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
    return model


def _windows(ids: Tensor, starts: Tensor, context: int) -> tuple[Tensor, Tensor]:
    """Inputs and next-character targets of the windows of ``ids`` at ``starts``, on ``ids``'s device."""
    starts = starts.to(ids.device, non_blocking=True)
    chunk = ids[starts[:, None] + torch.arange(context + 1, device=ids.device)].long()
    return chunk[:, :-1], chunk[:, 1:]


def _lm_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    x, y = batch
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def make(
    seed: int = 0,
    *,
    n_layer: int = 2,
    d_model: int = 128,
    n_head: int = 4,
    context: int = 64,
    batch_size: int = 32,
    max_chars: int | None = 2_000_000,
    eval_batches: int = 8,
    tie_weights: bool = False,
    device: str | torch.device = "cpu",
) -> Task:
    """``charlm``: next-character cross-entropy (nats/char) of a pre-LN causal transformer.

    Training batches are ``batch_size`` windows of ``context + 1`` characters at uniformly random
    positions of the training split (``max_chars`` characters of it; ``None`` for all ~4.3M).
    ``evaluate`` returns ``val_loss``, the mean cross-entropy over ``eval_batches * 32`` evenly
    spaced windows of the validation split (fixed, whatever the seed or ``batch_size``), and
    ``val_bpc = val_loss / ln 2``. ``tie_weights`` shares the embedding with the output head.
    The model, both splits and the validation positions live on ``device``.
    """
    device = torch.device(device)
    for key, value in {"n_layer": n_layer, "context": context, "batch_size": batch_size}.items():
        if value < 1:
            raise ValueError(f"{key} must be in [1, inf), got {value}")
    if eval_batches < 1:
        raise ValueError(f"eval_batches must be in [1, inf), got {eval_batches}")
    corpus = load_stdlib_corpus(max_chars)
    train, val = corpus.train.to(device), corpus.val.to(device)
    if min(len(train), len(val)) < context + 1:
        raise ValueError(
            f"context={context} needs more characters than the splits have "
            f"(train {len(train)}, val {len(val)}); raise max_chars"
        )
    generator = torch.Generator().manual_seed(seed)
    data_generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
    model = _build(corpus.vocab_size, context, n_layer, d_model, n_head, tie_weights, generator).to(device)
    if tie_weights:
        model.head.weight = model.tok.weight
    eval_starts = torch.linspace(0, len(val) - context - 1, eval_batches * EVAL_BATCH_SIZE).round().long()
    eval_starts = eval_starts.to(device)

    def next_batch() -> tuple[Tensor, Tensor]:
        starts = torch.randint(len(train) - context, (batch_size,), generator=data_generator)
        return _windows(train, starts, context)

    @torch.no_grad()
    def evaluate(m: nn.Module) -> dict[str, float]:
        losses = [_lm_loss(m, _windows(val, s, context)) for s in eval_starts.split(EVAL_BATCH_SIZE)]
        val_loss = float(torch.stack(losses).mean())
        return {"val_loss": val_loss, "val_bpc": val_loss / math.log(2)}

    return Task(
        name="charlm",
        model=model,
        next_batch=next_batch,
        loss=_lm_loss,
        evaluate=evaluate,
        config={
            "seed": seed,
            "n_layer": n_layer,
            "d_model": d_model,
            "n_head": n_head,
            "context": context,
            "batch_size": batch_size,
            "max_chars": max_chars,
            "eval_batches": eval_batches,
            "tie_weights": tie_weights,
            "python_version": corpus.python_version,
            "train_chars": len(train),
            "val_chars": len(val),
            "device": str(device),
        },
    )
