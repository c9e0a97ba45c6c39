"""Trajectory distillation: fewer-step students from a teacher's ODE/SDE trajectories (or none, for iLCT).

One module per method (``instaflow``, ``slimflow``, ``hyper_sd``, ``scott``, ``improved_lct``); the training loop,
pair generation, consistency distillation with trajectory segments and TCD sampling live once in ``_core``, the
tensor-level losses and schedules in ``_losses``; ``methods`` picks a distiller by name (``distill``) and samples its
student (``generate``).
"""

from thrifty.diffusion.distill._core import (
    ConsistencyDistillation,
    Distiller,
    TCDStep,
    consistency_sample,
    generate_pairs,
)
from thrifty.diffusion.distill._losses import FeatureDistance, cauchy_loss, ot_coupling, pseudo_huber_loss
from thrifty.diffusion.distill.hyper_sd import HyperSD
from thrifty.diffusion.distill.improved_lct import ImprovedLCT, NonScalingLayerNorm
from thrifty.diffusion.distill.instaflow import InstaFlow, OneStepDistillation, Reflow
from thrifty.diffusion.distill.methods import METHODS, distill, generate
from thrifty.diffusion.distill.scott import SCott
from thrifty.diffusion.distill.slimflow import AnnealingReflow, FlowGuidedDistillation, SlimFlow

__all__ = [
    "METHODS",
    "AnnealingReflow",
    "ConsistencyDistillation",
    "Distiller",
    "FeatureDistance",
    "FlowGuidedDistillation",
    "HyperSD",
    "ImprovedLCT",
    "InstaFlow",
    "NonScalingLayerNorm",
    "OneStepDistillation",
    "Reflow",
    "SCott",
    "SlimFlow",
    "TCDStep",
    "cauchy_loss",
    "consistency_sample",
    "distill",
    "generate",
    "generate_pairs",
    "ot_coupling",
    "pseudo_huber_loss",
]
