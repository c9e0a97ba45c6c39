"""Robust aggregation of the vectors that peers exchange (models or gradients), as pure tensor functions.

Every function takes the received vectors stacked as rows of a 2-D tensor ``(k, d)`` and returns one vector ``(d,)``.

* ``nna``: nearest-neighbour averaging (Farhadkhani et al., "Robust Collaborative Learning with Linear Gradient
  Overhead", arXiv 2209.10931): the mean of the ``k - f`` rows closest in L2 distance to the pivot row (a peer's own
  vector), the pivot itself included. Ties in distance go to the lower row index (a stable sort), as ByzFL's
  ``MoNNA`` aggregator; the official ``aggregators/cva.py::compute_closest_gradients`` sorts the same way.
* ``mean``: plain averaging (D-SGD's mixing; no robustness).
* ``coordinate_median``: coordinate-wise median; with an even count the mean of the two middle values, as
  ``torch.quantile(q=0.5)`` in the official ``aggregators/median.py``.
* ``trimmed_mean``: coordinate-wise mean after dropping the ``f`` largest and ``f`` smallest values of each coordinate
  (official ``aggregators/trmean.py``).

``AGGREGATORS`` maps each name to a uniform ``rule(vectors, f, pivot)`` so that a peer can pick one by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["AGGREGATORS", "Aggregator", "coordinate_median", "mean", "nna", "nna_many", "nna_select", "trimmed_mean"]

Aggregator = Callable[[Tensor, int, int], Tensor]


def _check(vectors: Tensor, f: int | None = None) -> int:
    if not isinstance(vectors, Tensor) or vectors.dim() != 2 or vectors.shape[0] < 1:
        shape = tuple(vectors.shape) if isinstance(vectors, Tensor) else type(vectors).__name__
        raise ValueError(f"vectors must be a 2-D tensor (count, dim) with at least one row, got {shape}")
    if not vectors.is_floating_point():
        raise ValueError(f"vectors must be floating point, got {vectors.dtype}")
    k = vectors.shape[0]
    if f is not None and (not isinstance(f, int) or isinstance(f, bool) or not 0 <= f < k):
        raise ValueError(f"f must be an integer in [0, {k - 1}] for {k} vectors, got {f!r}")
    return k


def nna_select(vectors: Tensor, f: int, pivot: int) -> Tensor:
    """Indices of the ``k - f`` rows closest (L2) to ``vectors[pivot]``: the pivot first, then the others nearest
    first, ties to the lower index. Rows with a NaN distance sort last (so NaN vectors are dropped first).
    """
    k = _check(vectors, f)
    if not isinstance(pivot, int) or not 0 <= pivot < k:
        raise ValueError(f"pivot must be a row index in [0, {k - 1}], got {pivot!r}")
    distances = torch.linalg.vector_norm(vectors - vectors[pivot], dim=1)
    distances[pivot] = -1.0  # the peer's own vector is always kept, even next to exact copies of it
    return torch.argsort(distances, stable=True)[: k - f]


def nna(vectors: Tensor, f: int, pivot: int) -> Tensor:
    """Nearest-neighbour averaging: mean of the ``k - f`` rows closest to ``vectors[pivot]`` (itself included)."""
    return vectors.index_select(0, nna_select(vectors, f, pivot)).mean(dim=0)


def nna_many(vectors: Tensor, f: int, pivots: Sequence[int]) -> Tensor:
    """NNA for several pivots at once: row ``j`` is ``nna(vectors, f, pivots[j])`` (same distances, same ties)."""
    k = _check(vectors, f)
    index = torch.as_tensor(list(pivots), dtype=torch.long, device=vectors.device)
    if index.dim() != 1 or len(index) == 0 or bool(((index < 0) | (index >= k)).any()):
        raise ValueError(f"pivots must be row indices in [0, {k - 1}], got {list(pivots)!r}")
    distances = torch.linalg.vector_norm(vectors.unsqueeze(0) - vectors[index].unsqueeze(1), dim=2)
    distances[torch.arange(len(index), device=vectors.device), index] = -1.0
    chosen = torch.argsort(distances, dim=1, stable=True)[:, : k - f]
    return vectors[chosen].mean(dim=1)


def mean(vectors: Tensor) -> Tensor:
    """Plain average of the rows."""
    _check(vectors)
    return vectors.mean(dim=0)


def coordinate_median(vectors: Tensor) -> Tensor:
    """Coordinate-wise median; an even count gives the mean of the two middle values."""
    k = _check(vectors)
    ordered = vectors.sort(dim=0).values
    return ordered[k // 2] if k % 2 else (ordered[k // 2 - 1] + ordered[k // 2]) / 2


def trimmed_mean(vectors: Tensor, f: int) -> Tensor:
    """Coordinate-wise mean after removing the ``f`` smallest and ``f`` largest values (needs ``k > 2f``)."""
    k = _check(vectors, f)
    if k <= 2 * f:
        raise ValueError(f"trimmed_mean needs more than 2f = {2 * f} vectors, got {k}")
    return vectors.sort(dim=0).values[f : k - f].mean(dim=0)


AGGREGATORS: dict[str, Aggregator] = {
    "nna": nna,
    "mean": lambda vectors, f, pivot: mean(vectors),
    "median": lambda vectors, f, pivot: coordinate_median(vectors),
    "trimmed_mean": lambda vectors, f, pivot: trimmed_mean(vectors, f),
}
