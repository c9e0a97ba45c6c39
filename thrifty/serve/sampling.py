"""Sampling parameters and batched token sampling (greedy, temperature, top-k, top-p), reproducible per request.

Every request owns a ``torch.Generator`` seeded from ``SamplingParams.seed`` (or fresh entropy when ``None``), and
draws exactly one vector of uniforms from it per sampled token, so its output does not depend on which other requests
share its batches, on the chunk size or on preemption. A row is sampled by the exponential race
``argmax_i p_i / E_i`` with ``E_i = -log U_i``, ``U_i`` uniform in [0, 1) (equivalent to drawing from ``p``), one
batched op. ``temperature == 0`` is greedy (argmax; ties go to the lowest id). Top-k keeps the ``k`` most likely
tokens, top-p the smallest set whose probability reaches ``p`` (nucleus sampling, Holtzman et al., arXiv
1904.09751), both after temperature, as vLLM and Hugging Face do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["SamplingParams", "sample_tokens"]


@dataclass(frozen=True)
class SamplingParams:
    """How to generate: at most ``max_tokens`` tokens, ``temperature`` (0 = greedy), ``top_p`` in (0, 1],
    ``top_k`` (0 or -1 = all), ``seed`` (``None``: not reproducible), ``stop`` strings (the text ends before the
    first one), ``stop_token_ids``, and ``ignore_eos`` (keep going past the end-of-sequence token)."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = field(default=())
    stop_token_ids: tuple[int, ...] = field(default=())
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if not isinstance(self.temperature, (int, float)) or not 0.0 <= self.temperature < float("inf"):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not isinstance(self.top_p, (int, float)) or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < -1:
            raise ValueError(f"top_k must be an integer >= 1, or 0 / -1 for no limit, got {self.top_k!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be an integer or None, got {self.seed!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop must hold non-empty strings, got {self.stop!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def make_generator(self) -> torch.Generator:
        """The request's own random stream (seeded from ``seed``, or from fresh entropy)."""
        g = torch.Generator()
        if self.seed is None:
            g.seed()
        else:
            g.manual_seed(self.seed)
        return g


def sample_tokens(
    logits: Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator | None]
) -> list[int]:
    """One token per row of ``logits`` ``[N, vocab]`` under ``params[i]``, drawing from ``generators[i]``
    (unused for greedy rows)."""
    if logits.dim() != 2 or logits.shape[0] != len(params) or len(params) != len(generators):
        raise ValueError(f"need logits [N, vocab] with N = len(params) = len(generators), got {tuple(logits.shape)}")
    logits = logits.float()
    out = logits.argmax(-1)
    rows = [i for i, p in enumerate(params) if not p.greedy]
    if rows:
        idx = torch.tensor(rows)
        sub = logits[idx] / torch.tensor([params[i].temperature for i in rows])[:, None]
        vocab = sub.shape[-1]
        top_k = [params[i].top_k if params[i].top_k > 0 else vocab for i in rows]
        top_p = [params[i].top_p for i in rows]
        order = None
        if min(top_k) < vocab or min(top_p) < 1.0:
            sub, order = sub.sort(-1, descending=True)
            ranks = torch.arange(vocab)[None, :]
            sub = sub.masked_fill(ranks >= torch.tensor(top_k)[:, None], float("-inf"))
            probs = sub.softmax(-1)
            # drop a token when the tokens ranked above it already reach top_p (the top token always stays)
            above = probs.cumsum(-1) - probs
            sub = sub.masked_fill(above >= torch.tensor(top_p)[:, None], float("-inf"))
        probs = sub.softmax(-1)
        noise = torch.stack([torch.rand(vocab, generator=generators[i]) for i in rows])
        choice = (probs / -torch.log(noise)).argmax(-1)  # E = -log U ~ Exp(1) in (0, inf]; p / E races
        if order is not None:
            choice = order.gather(1, choice[:, None])[:, 0]
        out[idx] = choice
    return out.tolist()
