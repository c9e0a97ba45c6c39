"""Ghost batch normalization and regime adaptation.

Hoffer, Hubara and Soudry, "Train longer, generalize better: closing the generalization gap in large
batch training of neural networks" (NeurIPS 2017, arXiv 1705.08741). The large-batch generalization gap
comes from too few updates; three fixes, for a large batch ``B_L`` and a small (ghost) batch ``B_S``:

- square-root learning-rate scaling: ``lr = lr0 * sqrt(B_L / B_S)``;
- regime adaptation: the number of epochs and every learning-rate decay epoch are multiplied by
  ``ceil(B_L / B_S)``, so the large batch makes as many updates as the small one;
- ghost batch normalization (GBN): batch norm statistics are taken over virtual batches of ``B_S``
  samples, and the running statistics are updated once per virtual batch.

Following the official code (``eladhoffer/bigBatch``, ``main_gbn.py``): the batch is split into
``B_L // B_S`` chunks (there with ``Tensor.chunk``; here ``tensor_split``, so chunk sizes differ by at
most one and every chunk holds at least ``B_S`` samples), each chunk is normalized with its own
statistics and updates the running statistics in turn, exactly as ``nn.BatchNorm`` does on that chunk.
The official code runs a forward and backward pass per chunk, sums the gradients and divides by the
number of chunks; with equal chunks and a mean loss that is the gradient of one pass over the whole
batch through ``GhostBatchNorm``, which is what this module gives (the tests check it). The official
training loops (``main_gbn.py`` and ``main_normal.py``) also clip the global gradient norm at 5 before
each step (``GRAD_CLIP_NORM``; not in the paper): use ``torch.nn.utils.clip_grad_norm_`` to follow them.
Their square-root scaling uses the exact ratio, their regime adaptation its ceiling, as here.
Evaluation uses the running statistics over the whole batch, as ``nn.BatchNorm`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["GRAD_CLIP_NORM", "GhostBatchNorm", "Regime", "convert_ghost_bn", "regime_adaptation"]

GRAD_CLIP_NORM = 5.0


class GhostBatchNorm(_BatchNorm):
    """Batch normalization over virtual batches of ``ghost_size`` samples, for inputs ``(N, C, *)``.

    In training (and whenever batch statistics are used, i.e. without running statistics) the batch is
    split into ``max(1, N // ghost_size)`` chunks of nearly equal size; each chunk is normalized by its own
    mean and variance and updates the running statistics (and ``num_batches_tracked``) as one
    ``nn.BatchNorm`` call on it would, chunk after chunk. With ``ghost_size >= N`` it is ``nn.BatchNorm``.
    Parameters and buffers are those of ``nn.BatchNorm``, so state dicts load either way.
    """

    def __init__(
        self,
        num_features: int,
        ghost_size: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        if ghost_size < 2:
            raise ValueError(f"ghost_size must be at least 2 (one sample has zero variance), got {ghost_size}")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.ghost_size = ghost_size

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an input of shape (N, C, *), got {input.dim()}-D input")

    def forward(self, input: Tensor) -> Tensor:
        chunks = max(1, input.shape[0] // self.ghost_size)
        batch_stats = self.training or self.running_mean is None
        if chunks == 1 or not batch_stats:
            return super().forward(input)
        return torch.cat([super(GhostBatchNorm, self).forward(chunk) for chunk in input.tensor_split(chunks)])

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ghost_size={self.ghost_size}"


def convert_ghost_bn(module: nn.Module, ghost_size: int) -> nn.Module:
    """Replace every ``nn.BatchNorm1d/2d/3d`` of ``module`` by a ``GhostBatchNorm`` with the same options,
    parameters, running statistics and train/eval mode; returns the module (replaced in place, or the new
    layer when ``module`` itself is a batch norm)."""
    if isinstance(module, _BatchNorm) and not isinstance(module, GhostBatchNorm | nn.SyncBatchNorm):
        like = module.weight if module.affine else module.running_mean
        factory = {} if like is None else {"device": like.device, "dtype": like.dtype}
        ghost = GhostBatchNorm(
            module.num_features,
            ghost_size,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            **factory,
        )
        ghost.load_state_dict(module.state_dict())
        return ghost.train(module.training)
    for name, child in module.named_children():
        converted = convert_ghost_bn(child, ghost_size)
        if converted is not child:
            setattr(module, name, converted)
    return module


@dataclass(frozen=True)
class Regime:
    """A training regime: learning rate, number of epochs and the epochs at which the learning rate decays."""

    lr: float
    epochs: int
    decay_points: tuple[int, ...]


def regime_adaptation(
    lr: float, epochs: int, decay_points: tuple[int, ...] | list[int], batch_size: int, base_batch_size: int
) -> Regime:
    """The regime for ``batch_size`` from one tuned for ``base_batch_size``, as in the official code.

    ``lr * sqrt(batch_size / base_batch_size)`` (``lr_bb_fix``), and ``epochs`` and every decay epoch
    multiplied by ``ceil(batch_size / base_batch_size)`` (``regime_bb_fix``), which keeps the number of
    updates. Use ``Regime.lr`` alone for square-root scaling without regime adaptation.
    """
    if batch_size < 1 or base_batch_size < 1:
        raise ValueError(f"batch sizes must be positive, got {batch_size} and {base_batch_size}")
    if lr <= 0 or epochs < 1 or any(d < 0 for d in decay_points):
        raise ValueError(f"need lr > 0, epochs >= 1 and decay points >= 0, got {lr}, {epochs}, {list(decay_points)}")
    factor = math.ceil(batch_size / base_batch_size)
    return Regime(
        lr * math.sqrt(batch_size / base_batch_size), epochs * factor, tuple(d * factor for d in decay_points)
    )
