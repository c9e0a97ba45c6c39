"""Registry of embedded, deterministic, offline workloads.

Every workload is a factory ``make(seed=0, **config) -> Task`` whose data ships with its
dependencies (scikit-learn's digits, the interpreter's standard library) or is synthetic, so runs
need no network. The seed fixes the initial weights and the batch stream through local
``torch.Generator`` objects; validation data never depends on it. Every factory takes
``device`` (default ``"cpu"``): weights and batch indices are still drawn on the CPU, so a seed
gives the same run on any device, and the model and data then live on ``device``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from thrifty.bench.workloads import charlm, digits, logreg, synthetic
from thrifty.bench.workloads.base import TRAINING_CLOCK, Curve, NonFiniteLossError, Task, fit

__all__ = [
    "TRAINING_CLOCK",
    "WORKLOADS",
    "Curve",
    "NonFiniteLossError",
    "Task",
    "UnknownWorkloadError",
    "WorkloadInfo",
    "fit",
    "get_workload",
    "list_workloads",
    "make_task",
]


@dataclass(frozen=True)
class WorkloadInfo:
    """A workload's factory and its headline validation metric (what a claim compares)."""

    name: str
    make: Callable[..., Task]
    description: str
    metric: str
    higher_is_better: bool


class UnknownWorkloadError(KeyError):
    """No workload of that name; the message lists the valid ones."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"unknown workload {self.name!r}; valid names: {', '.join(list_workloads())}"


WORKLOADS: dict[str, WorkloadInfo] = {
    info.name: info
    for info in [
        WorkloadInfo("digits_mlp", digits.make_mlp, "MLP 64-128-10 on scikit-learn's 8x8 digits", "val_acc", True),
        WorkloadInfo("digits_cnn", digits.make_cnn, "two-conv CNN on scikit-learn's 8x8 digits", "val_acc", True),
        WorkloadInfo(
            "charlm",
            charlm.make,
            "2-layer causal transformer character LM on the Python standard library",
            "val_loss",
            False,
        ),
        WorkloadInfo(
            "logreg",
            logreg.make,
            "multiclass logistic regression on the 8x8 digits (convex)",
            "val_loss",
            False,
        ),
        WorkloadInfo(
            "rosenbrock", synthetic.make_rosenbrock, "2-D Rosenbrock valley from (-1.5, 2)", "val_loss", False
        ),
        WorkloadInfo(
            "noisy_quadratic",
            synthetic.make_noisy_quadratic,
            "noisy quadratic model (Zhang et al. 2019), 100-D, condition number 100",
            "val_loss",
            False,
        ),
    ]
}


def list_workloads() -> list[str]:
    return sorted(WORKLOADS)


def get_workload(name: str) -> WorkloadInfo:
    """The registered workload ``name``; raises ``UnknownWorkloadError`` otherwise."""
    try:
        return WORKLOADS[name]
    except KeyError:
        raise UnknownWorkloadError(name) from None


def make_task(name: str, seed: int = 0, **config: Any) -> Task:
    """A fresh ``Task`` of workload ``name`` for ``seed``, with ``config`` passed to its factory."""
    return get_workload(name).make(seed, **config)
