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

__all__ = [
    "TESTS",
    "AdAdaGrad",
    "AdAdaGradNorm",
    "AdaptiveBatchSampler",
    "AdaptiveBatchSize",
    "micro_batch_grads",
    "per_sample_grads",
]
