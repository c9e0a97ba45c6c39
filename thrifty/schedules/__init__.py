"""Learning-rate schedules, batch-size scaling rules and learning-rate learners.

* :mod:`~thrifty.schedules.linear_decay`: linear decay and warm-up + cosine (``LambdaLR``s and multipliers);
* :mod:`~thrifty.schedules.refined`: schedule refinement from logged gradient norms (arXiv 2310.07831);
* :mod:`~thrifty.schedules.factory`: schedules by name with one warm-up convention (``make_scheduler``);
* :mod:`~thrifty.schedules.scaling`: linear / square-root learning-rate rules for a new batch size (arXiv 2006.09092);
* :mod:`~thrifty.schedules.lanczos_lr`: learning rate and momentum from Lanczos Hessian eigenvalues (arXiv 2006.09092).
"""

from __future__ import annotations

from thrifty.schedules.factory import SCHEDULES, WARMUP_FRAC, make_scheduler, schedule_factor, warmup_steps
from thrifty.schedules.lanczos_lr import LanczosLR, hessian_eigenvalues, hvp_operator, lanczos
from thrifty.schedules.linear_decay import linear_decay, linear_decay_factor, warmup_cosine, warmup_cosine_factor
from thrifty.schedules.refined import RULES, RefinedLR, median_smooth, refine_rule, refine_schedule
from thrifty.schedules.scaling import SCALING_RULES, scale_lr

__all__ = [
    "RULES",
    "SCALING_RULES",
    "SCHEDULES",
    "WARMUP_FRAC",
    "LanczosLR",
    "RefinedLR",
    "hessian_eigenvalues",
    "hvp_operator",
    "lanczos",
    "linear_decay",
    "linear_decay_factor",
    "make_scheduler",
    "median_smooth",
    "refine_rule",
    "refine_schedule",
    "scale_lr",
    "schedule_factor",
    "warmup_cosine",
    "warmup_cosine_factor",
    "warmup_steps",
]
