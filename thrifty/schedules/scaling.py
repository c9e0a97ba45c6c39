"""Learning-rate scaling rules for a change of batch size.

"Learning Rates as a Function of Batch Size: A Random Matrix Theory Approach to Neural Network
Training" (Granziol, Zohren, Roberts, arXiv 2006.09092): the extremal eigenvalues of the mini-batch
Hessian exceed the full Hessian's by a term that shrinks as 1/B, so the largest stable learning rate
grows with the batch size B, linearly for SGD and as the square root for adaptive methods (Adam):

    linear: lr(B) = lr(B0) * B / B0          (SGD)
    sqrt:   lr(B) = lr(B0) * sqrt(B / B0)    (Adam-type)

Both hold while B is small against the data set (the noise term dominates the spectrum).
"""

from __future__ import annotations

import math

__all__ = ["SCALING_RULES", "scale_lr"]

SCALING_RULES = ("linear", "sqrt")


def scale_lr(lr: float, batch_size: int, base_batch_size: int, rule: str = "linear") -> float:
    """The learning rate for ``batch_size`` given ``lr`` tuned at ``base_batch_size`` under ``rule``."""
    if rule not in SCALING_RULES:
        raise ValueError(f"rule must be one of {', '.join(SCALING_RULES)}, got {rule!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr}")
    for name, value in (("batch_size", batch_size), ("base_batch_size", base_batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    ratio = batch_size / base_batch_size
    return lr * (ratio if rule == "linear" else math.sqrt(ratio))
