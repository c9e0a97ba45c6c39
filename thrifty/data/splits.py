"""Heterogeneous splits of a labelled dataset across peers, for collaborative-learning experiments.

* ``dirichlet_split``: the recipe of the official MoNNA code (``experiments/dataset.py``, ``--dirichlet-alpha``):
  each peer gets ``len(labels) // num_parts`` samples in expectation, its class counts are
  ``floor(samples_per_part * Dirichlet(alpha))``, and it draws that many indices of each class without replacement
  (capped at the class size). Peers draw independently, so two peers may share samples, as in the official code.
  Small ``alpha`` gives each peer few classes; large ``alpha`` approaches an i.i.d. split.
* ``sorted_split``: the indices sorted by label (stable) and cut into ``num_parts`` contiguous, disjoint parts of
  near-equal size (``numpy.array_split``), so each peer sees one or two classes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["dirichlet_split", "sorted_split"]


def _check(labels: Tensor, num_parts: int) -> None:
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.dtype.is_floating_point:
        raise ValueError("labels must be a 1-D integer tensor")
    if not isinstance(num_parts, int) or not 1 <= num_parts <= len(labels):
        raise ValueError(f"num_parts must be an integer in [1, {len(labels)}], got {num_parts!r}")


def dirichlet_split(labels: Tensor, num_parts: int, alpha: float, seed: int = 0) -> list[Tensor]:
    """Per-part index tensors with Dirichlet(``alpha``) class proportions (official MoNNA recipe, see module doc)."""
    _check(labels, num_parts)
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha!r}")
    rng = np.random.default_rng(seed)
    y = labels.cpu().numpy()
    classes = np.unique(y)
    buckets = [np.flatnonzero(y == c) for c in classes]
    per_part = len(y) // num_parts
    counts = (per_part * rng.dirichlet(np.full(len(classes), float(alpha)), size=num_parts)).astype(np.int64)
    parts = []
    for row in counts:
        chosen = [rng.choice(b, size=min(int(k), len(b)), replace=False) for k, b in zip(row, buckets, strict=True)]
        parts.append(torch.from_numpy(np.sort(np.concatenate(chosen))))
    return parts


def sorted_split(labels: Tensor, num_parts: int) -> list[Tensor]:
    """Contiguous, disjoint parts of the label-sorted indices (each peer sees about ``classes / num_parts``)."""
    _check(labels, num_parts)
    order = np.argsort(labels.cpu().numpy(), kind="stable")
    return [torch.from_numpy(part.copy()) for part in np.array_split(order, num_parts)]
