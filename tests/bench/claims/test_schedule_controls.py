"""Negative controls for the schedule claims: a broken schedule is not held, the baseline's schedule never is.

The claim machinery runs at smoke scale with the method swapped: a refined schedule, a linear decay or a Lanczos
learner that zeroes the learning rate must come out not held, as must an optimizer that never moves (every
learning rate unstable: no batch-size scaling); the refined claim given linear decay itself as its "refined"
schedule must never be held. (For the "matches or outperforms" claims, linear decay and LanczosLR, a method equal to
its baseline is a match by definition, so only the broken-method control applies.) The two-workload claims run on
their first workload only, to keep each control to seconds.
"""

import numpy as np
import pytest
import torch

from thrifty.bench.claim import HELD, NOT_HELD
from thrifty.bench.claims import get_claim
from thrifty.bench.claims.schedules import lanczos_lr, linear_decay, refined
from thrifty.bench.experiment import clear_cache
from thrifty.bench.runner import run_claims
from thrifty.optim import factory
from thrifty.schedules import LanczosLR


class ZeroUpdate(torch.optim.Optimizer):
    """Takes any hyperparameters and never moves a parameter."""

    def __init__(self, params, lr=1e-3, **kwargs):
        super().__init__(params, {"lr": lr, **kwargs})

    def step(self, closure=None):
        return None


class ZeroRates(LanczosLR):
    """Estimates like LanczosLR, then sets the learning rate and momentum to zero."""

    def rates(self, lambda_max: float, lambda_min: float) -> tuple[float, float]:
        return 0.0, 0.0


def _verdict(key: str, seeds: int = 3) -> str:
    clear_cache()
    (result,) = run_claims([get_claim(key)], scale="smoke", seeds=seeds).results
    assert result.error is None, result.error
    clear_cache()
    return result.verdict


@pytest.mark.slow
def test_refined_schedule_that_zeroes_the_lr_is_not_held(monkeypatch):
    monkeypatch.setattr(refined, "WORKLOADS", refined.WORKLOADS[:1])
    monkeypatch.setattr(refined, "refine_schedule", lambda norms, **kwargs: np.zeros(len(norms)))
    assert _verdict("refined") == NOT_HELD


@pytest.mark.slow
def test_linear_decay_as_the_refined_schedule_is_never_held(monkeypatch):
    monkeypatch.setattr(refined, "WORKLOADS", refined.WORKLOADS[:1])
    monkeypatch.setattr(refined, "refined_spec", lambda linear, curves: linear)
    assert _verdict("refined") != HELD


@pytest.mark.slow
def test_linear_decay_that_zeroes_the_lr_is_not_held(monkeypatch):
    monkeypatch.setattr(linear_decay, "WORKLOADS", ("digits_mlp",))
    monkeypatch.setattr(linear_decay, "SCHEDULE", (0.0,))  # multipliers: zero at every step
    assert _verdict("linear_decay") == NOT_HELD


@pytest.mark.slow
def test_lanczos_learner_that_zeroes_the_lr_is_not_held(monkeypatch):
    monkeypatch.setattr(lanczos_lr, "LanczosLR", ZeroRates)
    assert _verdict("lanczos_lr") == NOT_HELD


@pytest.mark.slow
def test_optimizer_that_never_moves_shows_no_scaling(monkeypatch):
    for name in ("sgd", "adam"):
        monkeypatch.setitem(factory._REGISTRY, name, factory.OptimInfo(name, ZeroUpdate, "negative control"))
    assert _verdict("scaling_rules") == NOT_HELD
