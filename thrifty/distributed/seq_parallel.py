"""Sequence parallelism by ring self-attention (Li et al., "Sequence Parallelism: Long Sequence Training from System
Perspective", arXiv 2105.13120).

The sequence of ``N`` tokens is split into ``P`` contiguous chunks, one per rank; rank ``r`` holds ``Q_r, K_r, V_r``
(``N / P`` tokens). Attention is exact: the key/value chunks travel around the ring (send to ``r + 1``, receive from
``r - 1``), and after ``P - 1`` passes every query chunk has met every key chunk::

    O_r = sum_j softmax_row(Q_r K_j^T / sqrt(d)) V_j      (the softmax taken over all j)

The paper's Ring Self-Attention (ColossalAI's legacy ``RingQK`` / ``RingAV``; ``algorithm="rsa"``) rings the keys
to build the full ``N / P x N`` score rows, takes the softmax, then rings the values: memory ``O(N^2 / P)`` per rank.
The default (``algorithm="online"``, as in later ring attention and ring-flash-attn) rings keys and values together
and accumulates the softmax online in log-sum-exp form::

    lse_new = logaddexp(lse, lse_j);  O = O * exp(lse - lse_new) + O_j * exp(lse_j - lse_new)

so a rank never holds more than one ``N / P x N / P`` score block: memory per rank is ``O(N/P * d + (N/P)^2)``,
with the same ``2 (P - 1)`` chunk transfers in the forward. Both backwards ring too (``autograd.Function``s): the
key/value chunks go round again, and the gradient of each chunk travels with it, gathering every rank's
contribution, back to its owner after ``P`` hops. Causal attention skips the blocks above the diagonal (contiguous
chunks; the zigzag load balancing of later work is not implemented).

Transport is ``torch.distributed``'s ``batch_isend_irecv`` (gloo on CPU, NCCL on GPUs); the transfer of the next
chunk overlaps the computation on the current one.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["RingSelfAttention", "gather_sequence", "reference_attention", "ring_attention", "shard_sequence"]


def _group_info(group: dist.ProcessGroup | None) -> tuple[int, int]:
    if not dist.is_initialized():
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def shard_sequence(x: torch.Tensor, dim: int = 1, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """This rank's contiguous chunk of a full sequence ``x`` along ``dim`` (every rank passes the same ``x``).

    Raises ``ValueError`` before any communication when the length is not divisible by the world size.
    """
    rank, world = _group_info(group)
    n = x.shape[dim]
    if n % world:
        raise ValueError(f"sequence length {n} is not divisible by the world size {world}")
    return x.narrow(dim, rank * (n // world), n // world)


class _GatherSequence(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int, group: dist.ProcessGroup | None) -> torch.Tensor:
        ctx.dim, ctx.group = dim, group
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return shard_sequence(grad, ctx.dim, ctx.group).contiguous(), None, None


def gather_sequence(x: torch.Tensor, dim: int = 1, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Concatenate every rank's chunk along ``dim`` (autograd-aware: the full gradient is sliced back)."""
    if _group_info(group)[1] == 1:
        return x
    return _GatherSequence.apply(x, dim, group)


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """Single-process attention ``softmax(Q K^T / sqrt(d)) V`` (the full score matrix), for tests and baselines."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        n = q.shape[-2]
        mask = torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


class _Ring:
    """Pass a tensor to the next rank and receive the previous rank's, asynchronously (one hop of the ring)."""

    def __init__(self, group: dist.ProcessGroup | None) -> None:
        self.group = group
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        to_global = (lambda r: dist.get_global_rank(group, r)) if group is not None else (lambda r: r)
        self.next, self.prev = to_global((rank + 1) % world), to_global((rank - 1) % world)

    def start(self, send: torch.Tensor, tag: int = 0) -> tuple[torch.Tensor, list]:
        recv = torch.empty_like(send)
        ops = [
            dist.P2POp(dist.isend, send, self.next, self.group, tag),
            dist.P2POp(dist.irecv, recv, self.prev, self.group, tag),
        ]
        return recv, dist.batch_isend_irecv(ops)

    @staticmethod
    def wait(requests: list) -> None:
        for request in requests:
            request.wait()


def _block_mask(causal: bool, rank: int, source: int, n: int, device: torch.device) -> torch.Tensor | None | bool:
    """The causal mask of the block (queries of ``rank``, keys of ``source``): None (all visible), True (skip)."""
    if not causal or source < rank:
        return None
    if source > rank:
        return True
    return torch.ones(n, n, dtype=torch.bool, device=device).triu(1)


class _RingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal: bool, group):  # noqa: ANN001 - autograd.Function signature
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        ring = _Ring(group)
        scale = 1.0 / math.sqrt(q.shape[-1])
        acc = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
        n = q.shape[-2]
        out = torch.zeros(q.shape, dtype=acc, device=q.device)
        lse = torch.full(q.shape[:-1], float("-inf"), dtype=acc, device=q.device)
        kv = torch.stack((k, v))
        for step in range(world):
            pending = ring.start(kv) if step < world - 1 else None
            source = (rank - step) % world
            mask = _block_mask(causal, rank, source, n, q.device)
            if mask is not True:
                scores = (q @ kv[0].transpose(-1, -2)).to(acc) * scale
                if mask is not None:
                    scores = scores.masked_fill(mask, float("-inf"))
                block_lse = torch.logsumexp(scores, dim=-1)
                block_out = torch.exp(scores - block_lse.unsqueeze(-1)).to(q.dtype) @ kv[1]
                new_lse = torch.logaddexp(lse, block_lse)
                out = out * torch.exp(lse - new_lse).unsqueeze(-1) + block_out.to(acc) * torch.exp(
                    block_lse - new_lse
                ).unsqueeze(-1)
                lse = new_lse
                del scores, block_out
            if pending is not None:
                kv, requests = pending
                _Ring.wait(requests)
        out = out.to(q.dtype)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.causal, ctx.group = causal, group
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205 - autograd.Function signature
        q, k, v, out, lse = ctx.saved_tensors
        group, causal = ctx.group, ctx.causal
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        ring = _Ring(group)
        scale = 1.0 / math.sqrt(q.shape[-1])
        acc = lse.dtype
        n = q.shape[-2]
        grad_out = grad_out.contiguous()
        # D_i = sum_d dO_id O_id: the softmax Jacobian's row term, the same for every key block
        delta = (grad_out.to(acc) * out.to(acc)).sum(-1, keepdim=True)
        grad_q = torch.zeros(q.shape, dtype=acc, device=q.device)
        kv = torch.stack((k, v))
        grad_kv = torch.zeros(kv.shape, dtype=acc, device=q.device)
        for step in range(world):
            pending = ring.start(kv) if step < world - 1 else None
            source = (rank - step) % world
            mask = _block_mask(causal, rank, source, n, q.device)
            if mask is not True:
                scores = (q @ kv[0].transpose(-1, -2)).to(acc) * scale
                if mask is not None:
                    scores = scores.masked_fill(mask, float("-inf"))
                probs = torch.exp(scores - lse.unsqueeze(-1))
                grad_kv[1] += probs.transpose(-1, -2) @ grad_out.to(acc)
                grad_scores = probs * ((grad_out @ kv[1].transpose(-1, -2)).to(acc) - delta) * scale
                grad_q += grad_scores @ kv[0].to(acc)
                grad_kv[0] += grad_scores.transpose(-1, -2) @ q.to(acc)
                del scores, probs, grad_scores
            if world > 1:
                # the gradient of the chunk now held travels on with it; after world hops it is back at its owner
                grad_kv, grad_requests = ring.start(grad_kv, tag=1)
                if pending is not None:
                    kv, requests = pending
                    _Ring.wait(requests)
                _Ring.wait(grad_requests)
        return grad_q.to(q.dtype), grad_kv[0].to(k.dtype), grad_kv[1].to(v.dtype), None, None


def _ring_visit(block: torch.Tensor, group: dist.ProcessGroup | None, visit) -> None:  # noqa: ANN001
    """Pass this rank's ``block`` round the ring; ``visit(source, chunk)`` sees every rank's chunk once."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    ring = _Ring(group)
    for step in range(world):
        pending = ring.start(block) if step < world - 1 else None
        visit((rank - step) % world, block)
        if pending is not None:
            block, requests = pending
            _Ring.wait(requests)


def _ring_accumulate(block: torch.Tensor, group: dist.ProcessGroup | None, contribution) -> torch.Tensor:  # noqa: ANN001
    """Ring ``block`` as ``_ring_visit`` does; ``contribution(source, chunk)`` returns this rank's share of the
    gradient of that chunk, the partial sums travel with the chunks, and the total for this rank's chunk returns."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    ring = _Ring(group)
    total = torch.zeros_like(block)
    for step in range(world):
        pending = ring.start(block) if step < world - 1 else None
        total = total + contribution((rank - step) % world, block)
        if world > 1:
            total, total_requests = ring.start(total, tag=1)
            if pending is not None:
                block, requests = pending
                _Ring.wait(requests)
            _Ring.wait(total_requests)
    return total


class _RingQK(torch.autograd.Function):
    """The paper's RingQK: this rank's full score rows ``Q_r K^T`` (``N / P x N``), keys ringed."""

    @staticmethod
    def forward(ctx, q, k, group):  # noqa: ANN001, ANN205
        n, world = k.shape[-2], dist.get_world_size(group)
        scores = q.new_empty(*q.shape[:-1], n * world)

        def visit(source: int, chunk: torch.Tensor) -> None:
            scores[..., source * n : (source + 1) * n] = q @ chunk.transpose(-1, -2)

        _ring_visit(k, group, visit)
        ctx.save_for_backward(q, k)
        ctx.group = group
        return scores

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        q, k = ctx.saved_tensors
        n = k.shape[-2]
        grad_q = torch.zeros_like(q)

        def contribution(source: int, chunk: torch.Tensor) -> torch.Tensor:
            block = grad[..., source * n : (source + 1) * n]
            grad_q.add_(block @ chunk)
            return block.transpose(-1, -2) @ q

        grad_k = _ring_accumulate(k, ctx.group, contribution)
        return grad_q, grad_k, None


class _RingAV(torch.autograd.Function):
    """The paper's RingAV: ``sum_j A_r[:, j-block] V_j``, values ringed."""

    @staticmethod
    def forward(ctx, attn, v, group):  # noqa: ANN001, ANN205
        n = v.shape[-2]
        out = attn.new_zeros(*attn.shape[:-1], v.shape[-1])

        def visit(source: int, chunk: torch.Tensor) -> None:
            out.add_(attn[..., source * n : (source + 1) * n] @ chunk)

        _ring_visit(v, group, visit)
        ctx.save_for_backward(attn, v)
        ctx.group = group
        return out

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        attn, v = ctx.saved_tensors
        n = v.shape[-2]
        grad_attn = torch.empty_like(attn)

        def contribution(source: int, chunk: torch.Tensor) -> torch.Tensor:
            grad_attn[..., source * n : (source + 1) * n] = grad @ chunk.transpose(-1, -2)
            return attn[..., source * n : (source + 1) * n].transpose(-1, -2) @ grad

        grad_v = _ring_accumulate(v, ctx.group, contribution)
        return grad_attn, grad_v, None


def _rsa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, group: dist.ProcessGroup | None):
    """The paper's Ring Self-Attention: full score rows by RingQK, a local softmax, then RingAV."""
    scores = _RingQK.apply(q / math.sqrt(q.shape[-1]), k, group)
    if causal:
        n, rank = q.shape[-2], dist.get_rank(group)
        queries = torch.arange(rank * n, (rank + 1) * n, device=q.device)
        keys = torch.arange(scores.shape[-1], device=q.device)
        scores = scores.masked_fill(keys > queries.unsqueeze(-1), float("-inf"))
    return _RingAV.apply(torch.softmax(scores, dim=-1), v, group)


def _check_shards(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: dist.ProcessGroup | None) -> None:
    if q.dim() < 2 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(
            f"q, k and v must have the same shape (..., seq, head_dim), got {tuple(q.shape)}, {tuple(k.shape)}, "
            f"{tuple(v.shape)}"
        )
    if not q.is_floating_point():
        raise ValueError(f"q, k and v must be floating point, got {q.dtype}")
    # Equal shard shapes on every rank are what the ring's receive buffers assume: one tiny all-gather of the shape
    # checks it, so that a mismatch raises the same ValueError on every rank instead of a hang or garbage.
    world = dist.get_world_size(group)
    shape = torch.tensor(list(q.shape), dtype=torch.int64)
    shapes = [torch.empty_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape, group=group)
    if any(not torch.equal(s, shape) for s in shapes):
        raise ValueError(
            "every rank must hold a shard of the same shape (the sequence split evenly, see shard_sequence); got "
            f"{[tuple(s.tolist()) for s in shapes]}"
        )


def ring_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    group: dist.ProcessGroup | None = None,
    check: bool = True,
    algorithm: str = "online",
) -> torch.Tensor:
    """Exact attention over a sequence sharded across the ranks of ``group``.

    ``q``, ``k``, ``v``: this rank's contiguous chunk, shape ``(..., N / P, head_dim)`` (rank ``r`` holds tokens
    ``r N / P ... (r + 1) N / P - 1``). Returns this rank's chunk of ``softmax(Q K^T / sqrt(d)) V``; with
    ``causal`` a query attends to keys at its own position or earlier. Without an initialised process group (or with
    one rank) it is plain attention. ``check`` verifies that every rank holds a chunk of the same shape (one small
    all-gather) and raises ``ValueError`` otherwise.

    ``algorithm``: ``"online"`` (default) rings keys and values together with an online softmax, memory
    ``O((N/P)^2)`` per rank; ``"rsa"`` is the paper's RingQK / softmax / RingAV with full ``N/P x N`` score rows,
    memory ``O(N^2/P)``. Both are exact.
    """
    if algorithm not in ("online", "rsa"):
        raise ValueError(f"algorithm must be 'online' or 'rsa', got {algorithm!r}")
    if not dist.is_initialized():
        return reference_attention(q, k, v, causal)
    if check:
        _check_shards(q, k, v, group)
    if algorithm == "rsa":
        return _rsa(q.contiguous(), k.contiguous(), v.contiguous(), causal, group)
    return _RingAttention.apply(q.contiguous(), k.contiguous(), v.contiguous(), causal, group)


class RingSelfAttention(nn.Module):
    """Multi-head self-attention on a sequence sharded across ranks (ring attention; arXiv 2105.13120).

    ``forward(x)`` takes this rank's chunk ``(batch, N / P, embed_dim)`` (see ``shard_sequence``) and returns this
    rank's chunk of the output. The projections act token by token, so only the attention core communicates; the
    weights are replicated (initialise them identically on every rank, e.g. with the same seed). ``algorithm``:
    ``"online"`` or the paper's ``"rsa"`` (see ``ring_attention``).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        causal: bool = False,
        bias: bool = True,
        group: dist.ProcessGroup | None = None,
        algorithm: str = "online",
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.causal, self.group = embed_dim, num_heads, causal, group
        self.algorithm = algorithm
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)
        self.out = nn.Linear(embed_dim, embed_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"expected (batch, seq_chunk, {self.embed_dim}), got {tuple(x.shape)}")
        b, n, e = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, e // self.num_heads).permute(2, 0, 3, 1, 4)
        y = ring_attention(q, k, v, self.causal, self.group, algorithm=self.algorithm)
        return self.out(y.transpose(1, 2).reshape(b, n, e))

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, causal={self.causal}"
