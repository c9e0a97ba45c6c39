"""Multiclass logistic regression on the digits: a convex problem, so optimizers differ only in speed."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from thrifty.bench.workloads.base import Task
from thrifty.bench.workloads.digits import classification_task
from thrifty.data.digits import NUM_CLASSES, NUM_FEATURES

__all__ = ["make"]


def make(seed: int = 0, *, weight_decay: float = 0.0, batch_size: int = 64, device: str | torch.device = "cpu") -> Task:
    """``logreg``: one ``nn.Linear(64, 10)``; the seed fixes its init and the batch order.

    The training loss is cross-entropy plus ``weight_decay / 2 * ||W||^2`` on the weight matrix
    (not the bias), so the L2 term is part of the objective rather than of the optimizer;
    ``val_loss`` is the plain cross-entropy on the validation split.
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be in [0, inf), got {weight_decay}")

    def loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        value = F.cross_entropy(model(x), y)
        if weight_decay:
            value = value + 0.5 * weight_decay * model.weight.square().sum()
        return value

    def factory() -> nn.Module:
        return nn.Linear(NUM_FEATURES, NUM_CLASSES)

    return classification_task("logreg", factory, seed, batch_size, {"weight_decay": weight_decay}, loss, device=device)
