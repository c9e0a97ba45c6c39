"""Batch-size methods: adaptive batch sizes for adaptive gradient methods (AdAdaGrad, arXiv 2402.11215); ghost batch
norm and regime adaptation (Train longer, generalize better, arXiv 1705.08741); concurrent adversarial learning
(ConAdv, arXiv 2106.00221); the SGD-noise study's alpha-trick model and critical temperature (arXiv 2301.13703)."""

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
from thrifty.batching.conadv import ConAdv, adversarial_step, fgsm
from thrifty.batching.ghost_bn import GRAD_CLIP_NORM, GhostBatchNorm, Regime, convert_ghost_bn, regime_adaptation
from thrifty.batching.sgd_noise import (
    AlphaScaledModel,
    critical_temperature,
    fit_power_law,
    scaled_hinge_loss,
    train_until_fitted,
)

__all__ = [
    "GRAD_CLIP_NORM",
    "TESTS",
    "AdAdaGrad",
    "AdAdaGradNorm",
    "AdaptiveBatchSampler",
    "AdaptiveBatchSize",
    "AlphaScaledModel",
    "ConAdv",
    "GhostBatchNorm",
    "Regime",
    "adversarial_step",
    "convert_ghost_bn",
    "critical_temperature",
    "fgsm",
    "fit_power_law",
    "micro_batch_grads",
    "per_sample_grads",
    "regime_adaptation",
    "scaled_hinge_loss",
    "train_until_fitted",
]
