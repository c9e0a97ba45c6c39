"""Megatron-style tensor-parallel self-attention (Shoeybi et al., arXiv 1909.08053), the baseline that sequence
parallelism (arXiv 2105.13120) is compared with.

The attention heads are split across the ``P`` ranks of a group: every rank holds the whole sequence and computes
``H / P`` heads. The query/key/value projection is column-parallel (each rank keeps the rows of the fused ``3E x E``
weight that produce its heads), the attention core is local, and the output projection is row-parallel (each rank
keeps the columns that read its heads), so each rank produces a partial sum of the output that one all-reduce
completes::

    x --f--> [Q_r K_r V_r = x W_qkv,r^T] -> attention over heads r -> y_r W_out,r^T --g--> sum_r (...) + b_out

``f`` is the identity forward and an all-reduce of the input's gradient backward; ``g`` is an all-reduce forward and
the identity backward (Megatron's conjugate pair). Per rank, the score matrices take ``H / P x N x N``, but the
input, the output and their gradients (``N x E``) are replicated, and ``P`` cannot exceed the number of heads.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn

from thrifty.distributed.seq_parallel import reference_attention

__all__ = ["TensorParallelSelfAttention", "copy_to_tensor_parallel", "reduce_from_tensor_parallel"]


def _world(group: dist.ProcessGroup | None) -> tuple[int, int]:
    if not dist.is_initialized():
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


class _CopyToParallel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class _ReduceFromParallel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
        x = x.contiguous().clone()
        dist.all_reduce(x, group=group)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def copy_to_tensor_parallel(x: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Megatron's ``f``: the identity, whose backward all-reduces the gradient (every rank's branch uses ``x``)."""
    if _world(group)[1] == 1:
        return x
    return _CopyToParallel.apply(x, group)


def reduce_from_tensor_parallel(x: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Megatron's ``g``: the sum of every rank's partial ``x``, whose backward passes the gradient through."""
    if _world(group)[1] == 1:
        return x
    return _ReduceFromParallel.apply(x, group)


class TensorParallelSelfAttention(nn.Module):
    """Multi-head self-attention with its heads split across the ranks of ``group`` (Megatron tensor parallelism).

    ``forward(x)`` takes the whole sequence ``(batch, N, embed_dim)``, the same on every rank, and returns the whole
    output on every rank. Rank ``r`` holds heads ``r H / P ... (r + 1) H / P - 1``: its slice of the query/key/value
    projection (column-parallel) and of the output projection (row-parallel); the output bias is replicated and
    added once, after the all-reduce. ``num_heads`` must be divisible by the group's size. ``load_full`` copies this
    rank's slices from the weights of a single-process layer (the fused layout of ``nn.MultiheadAttention`` and
    ``RingSelfAttention``: ``qkv`` rows ``[q; k; v]``, head ``h`` at rows ``h d ... (h + 1) d - 1`` of each).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        causal: bool = False,
        bias: bool = True,
        group: dist.ProcessGroup | None = None,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.rank, self.world = _world(group)
        if num_heads % self.world:
            raise ValueError(
                f"num_heads {num_heads} is not divisible by the tensor-parallel size {self.world} (tensor "
                "parallelism cannot split attention over more ranks than heads)"
            )
        self.embed_dim, self.num_heads, self.causal, self.group = embed_dim, num_heads, causal, group
        self.local_heads = num_heads // self.world
        self.head_dim = embed_dim // num_heads
        local = self.local_heads * self.head_dim
        self.qkv = nn.Linear(embed_dim, 3 * local, bias=bias)
        self.out = nn.Linear(local, embed_dim, bias=False)
        self.out_bias = nn.Parameter(torch.zeros(embed_dim)) if bias else None
        bound = 1.0 / math.sqrt(embed_dim)  # as nn.Linear(embed_dim, embed_dim) initialises its bias
        if self.out_bias is not None:
            nn.init.uniform_(self.out_bias, -bound, bound)

    def _rows(self) -> torch.Tensor:
        """Indices of this rank's rows in the fused ``3E x E`` projection."""
        local = self.local_heads * self.head_dim
        start = self.rank * local
        return torch.cat(
            [torch.arange(i * self.embed_dim + start, i * self.embed_dim + start + local) for i in range(3)]
        )

    @torch.no_grad()
    def load_full(
        self,
        qkv_weight: torch.Tensor,
        qkv_bias: torch.Tensor | None,
        out_weight: torch.Tensor,
        out_bias: torch.Tensor | None,
    ) -> TensorParallelSelfAttention:
        """Copy this rank's slices from a single-process layer's weights; returns ``self``."""
        e = self.embed_dim
        if qkv_weight.shape != (3 * e, e) or out_weight.shape != (e, e):
            raise ValueError(f"expected weights (3E, E) and (E, E) with E = {e}")
        rows = self._rows()
        self.qkv.weight.copy_(qkv_weight[rows])
        local = self.local_heads * self.head_dim
        self.out.weight.copy_(out_weight[:, self.rank * local : (self.rank + 1) * local])
        if self.qkv.bias is not None:
            if qkv_bias is None or out_bias is None:
                raise ValueError("this layer has biases: pass qkv_bias and out_bias")
            self.qkv.bias.copy_(qkv_bias[rows])
            self.out_bias.copy_(out_bias)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"expected (batch, seq, {self.embed_dim}), got {tuple(x.shape)}")
        b, n, _ = x.shape
        x = copy_to_tensor_parallel(x, self.group)
        q, k, v = self.qkv(x).view(b, n, 3, self.local_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        y = reference_attention(q, k, v, self.causal)
        partial = self.out(y.transpose(1, 2).reshape(b, n, self.local_heads * self.head_dim))
        out = reduce_from_tensor_parallel(partial, self.group)
        return out if self.out_bias is None else out + self.out_bias

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads} ({self.local_heads} on this rank of "
            f"{self.world}), causal={self.causal}"
        )
