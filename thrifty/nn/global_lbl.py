"""Global-batch load-balancing loss for mixture-of-experts (Qiu et al., "Demons in the Detail: On Implementing Load
Balancing Loss for Training Specialized Mixture-of-Expert Models", arXiv 2501.11873), and a top-k MoE layer.

With ``N_E`` experts, top-``K`` routing, router probabilities ``s_t = softmax(router(x_t))`` and the selected experts
of ``T`` tokens::

    f_i = #{(t, k): expert i is the k-th choice of token t} / (K T)     (selection frequency, sums to 1)
    p_i = (1 / T) sum_t s_{t,i}                                          (mean gate probability)
    LBL = N_E sum_i f_i p_i                                              (1 when routing is uniform)

Frameworks compute ``f`` and ``p`` per micro-batch (a few sequences), which pushes the router to spread every
sequence evenly over the experts. The paper computes ``f`` over the global batch: the expert counts are accumulated
over the gradient-accumulation micro-batches and all-reduced over the data-parallel ranks (one small all-reduce of
``N_E`` counts), then ``LBL = N_E sum_i f_i^global p_i^local`` for each micro-batch; ``f`` carries no gradient.

How the counts of later micro-batches are known before the backward of earlier ones is left to the training loop:
``GlobalLoadBalancingLoss`` separates ``update`` (count a micro-batch's selections), ``synchronize`` (all-reduce the
counts so far) and ``forward`` (the loss from the last synchronised ``f``). Counting every micro-batch first (e.g.
a no-grad routing pass), then synchronising once, gives exactly the loss of the concatenated global batch (the mean
of the micro-batch terms for equal-sized micro-batches; tested). Calling ``update`` and ``synchronize`` before each
micro-batch's loss instead uses the counts seen so far (Megatron's running "global aux loss" buffer).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["GlobalLoadBalancingLoss", "MoELayer", "MoEOutput", "expert_counts", "micro_batch_load_balancing_loss"]


def _check_routing(probs: torch.Tensor | None, selected: torch.Tensor | None, num_experts: int, top_k: int) -> None:
    if probs is not None and (probs.dim() < 1 or probs.shape[-1] != num_experts):
        raise ValueError(f"probs must have a last dimension of num_experts = {num_experts}, got {tuple(probs.shape)}")
    if selected is not None:
        if selected.dim() < 1 or selected.shape[-1] != top_k or selected.is_floating_point():
            raise ValueError(f"selected must hold integer expert indices, last dimension top_k = {top_k}")
        if selected.numel() and (selected.min() < 0 or selected.max() >= num_experts):
            raise ValueError(f"selected expert indices must lie in [0, {num_experts})")


def expert_counts(selected: torch.Tensor, num_experts: int) -> torch.Tensor:
    """How many times each expert was selected (int64, length ``num_experts``)."""
    return torch.bincount(selected.reshape(-1), minlength=num_experts).to(torch.int64)


def micro_batch_load_balancing_loss(probs: torch.Tensor, selected: torch.Tensor, top_k: int) -> torch.Tensor:
    """The usual LBL of one micro-batch: ``N_E sum_i f_i p_i`` with ``f`` and ``p`` from the same tokens.

    ``probs``: ``(..., N_E)`` router probabilities; ``selected``: ``(..., top_k)`` chosen experts.
    """
    num_experts = probs.shape[-1]
    _check_routing(probs, selected, num_experts, top_k)
    f = expert_counts(selected, num_experts).to(probs.dtype) / selected.numel()
    p = probs.reshape(-1, num_experts).mean(0)
    return num_experts * (f * p).sum()


class GlobalLoadBalancingLoss(nn.Module):
    """LBL with expert frequencies from the whole global batch (arXiv 2501.11873).

    ``update(selected)`` counts one micro-batch's selections; ``synchronize()`` all-reduces the counts over
    ``group`` (the data-parallel ranks, the default group when None; no communication without an initialised
    process group); ``forward(probs)`` returns ``N_E sum_i f_i^global p_i`` with ``p`` from ``probs`` (this
    micro-batch); ``reset()`` starts the next global batch (after the optimizer step).
    """

    def __init__(self, num_experts: int, top_k: int, group: dist.ProcessGroup | None = None) -> None:
        super().__init__()
        if num_experts < 1 or not 1 <= top_k <= num_experts:
            raise ValueError(f"need num_experts >= 1 and 1 <= top_k <= num_experts, got {num_experts}, {top_k}")
        self.num_experts, self.top_k, self.group = num_experts, top_k, group
        self.register_buffer("counts", torch.zeros(num_experts, dtype=torch.int64), persistent=False)
        self.register_buffer("global_counts", torch.zeros(num_experts, dtype=torch.int64), persistent=False)
        self.synchronized = False

    @torch.no_grad()
    def update(self, selected: torch.Tensor) -> None:
        """Add one micro-batch's expert selections ``(..., top_k)`` to this rank's counts."""
        _check_routing(None, selected, self.num_experts, self.top_k)
        self.counts += expert_counts(selected, self.num_experts).to(self.counts.device)
        self.synchronized = False

    @torch.no_grad()
    def synchronize(self) -> torch.Tensor:
        """All-reduce the counts over the data-parallel group; returns the global frequencies ``f`` (sum 1)."""
        self.global_counts.copy_(self.counts)
        if dist.is_initialized():
            dist.all_reduce(self.global_counts, group=self.group)
        if int(self.global_counts.sum()) == 0:
            raise RuntimeError("no expert selections were counted: call update(selected) before synchronize()")
        self.synchronized = True
        return self.frequencies()

    def frequencies(self) -> torch.Tensor:
        """The global selection frequencies ``f_i`` of the last synchronisation (float64)."""
        return self.global_counts.double() / self.global_counts.sum()

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        if not self.synchronized:
            raise RuntimeError("call update(selected) for the micro-batches, then synchronize(), before the loss")
        _check_routing(probs, None, self.num_experts, self.top_k)
        p = probs.reshape(-1, self.num_experts).mean(0)
        return self.num_experts * (self.frequencies().to(p.dtype) * p).sum()

    def reset(self) -> None:
        self.counts.zero_()
        self.global_counts.zero_()
        self.synchronized = False

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, top_k={self.top_k}"


class MoEOutput(NamedTuple):
    """A MoE layer's output and routing: ``probs`` ``(..., N_E)`` and ``selected`` ``(..., top_k)`` per token."""

    output: torch.Tensor
    probs: torch.Tensor
    selected: torch.Tensor


class MoELayer(nn.Module):
    """Token-choice top-k mixture of small MLP experts with a softmax router (no capacity limit, no token dropping).

    ``y_t = sum_{i in topk(s_t)} g_{t,i} E_i(x_t)``, ``s_t = softmax(W_r x_t)``; the gates ``g`` are the selected
    probabilities, renormalised to sum to one when ``normalize_topk`` (Mixtral, Qwen3-MoE) or the raw ones otherwise.
    Returns ``MoEOutput`` so that the caller computes the balancing loss it wants from ``probs`` and ``selected``.
    """

    def __init__(
        self, d_model: int, d_hidden: int, num_experts: int, top_k: int = 2, normalize_topk: bool = True
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"need 1 <= top_k <= num_experts, got top_k={top_k}, num_experts={num_experts}")
        self.num_experts, self.top_k, self.normalize_topk = num_experts, top_k, normalize_topk
        self.router = nn.Linear(d_model, num_experts, bias=False)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(d_model, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_model))
            for _ in range(num_experts)
        )

    def forward(self, x: torch.Tensor) -> MoEOutput:
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        probs = torch.softmax(self.router(tokens), dim=-1)
        gates, selected = probs.topk(self.top_k, dim=-1)
        if self.normalize_topk:
            gates = gates / gates.sum(-1, keepdim=True)
        out = torch.zeros_like(tokens)
        for i, expert in enumerate(self.experts):
            token, slot = torch.nonzero(selected == i, as_tuple=True)
            if token.numel():
                out.index_add_(0, token, expert(tokens[token]) * gates[token, slot].unsqueeze(-1))
        return MoEOutput(out.reshape(shape), probs.reshape(*shape[:-1], -1), selected.reshape(*shape[:-1], self.top_k))
