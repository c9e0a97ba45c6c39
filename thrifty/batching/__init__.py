"""Batch-size methods: adaptive batch sizes for adaptive gradient methods (AdAdaGrad, arXiv 2402.11215)."""

from __future__ import annotations

from thrifty.batching.adadagrad import (
    TESTS,
    AdAdaGrad,
    AdAdaGradNorm,
    AdaptiveBatchSampler,
    AdaptiveBatchSize,
    micro_batch_grads,
    per_sample_grads,
)
from thrifty.batching.sgd_noise import (
    AlphaScaledModel,
    critical_temperature,
    plot_phase_diagram,
    scaled_hinge_loss,
    sweep,
    train_until_fitted,
)

__all__ = [
    "TESTS",
    "AdAdaGrad",
    "AdAdaGradNorm",
    "AdaptiveBatchSampler",
    "AdaptiveBatchSize",
    "AlphaScaledModel",
    "critical_temperature",
    "micro_batch_grads",
    "per_sample_grads",
    "plot_phase_diagram",
    "scaled_hinge_loss",
    "sweep",
    "train_until_fitted",
]
