"""Negative controls for the optimizer-comparison claims: a broken optimizer is never held, nor an unchanged one.

The claim machinery runs at smoke scale with the method swapped (its registry entry, or the class the claim module
builds): an optimizer whose update is zero must come out not held; the baseline itself, run under the method's name
(plain Adam as diffGrad, FRUGAL without its residual update, AGVM without modulation, BSVRB without variance
reduction), must never be held.
"""

import pytest
import torch

from thrifty.bench.claim import HELD, NOT_HELD
from thrifty.bench.claims import get_claim
from thrifty.bench.claims.optim import agvm as agvm_claim
from thrifty.bench.claims.optim import bsvrb as bsvrb_claim
from thrifty.bench.claims.optim import sso as sso_claim
from thrifty.bench.experiment import clear_cache
from thrifty.bench.runner import run_claims
from thrifty.optim import factory
from thrifty.optim.agvm import AGVM
from thrifty.optim.bsvrb import BSVRB
from thrifty.optim.frugal import FRUGAL
from thrifty.optim.sso import SSO


class ZeroUpdate(torch.optim.Optimizer):
    """Takes any hyperparameters and never moves a parameter."""

    def __init__(self, params, lr=1e-3, **kwargs):
        super().__init__(params, {"lr": lr, **kwargs})

    def step(self, closure=None):
        return None


def _swap(monkeypatch, name: str, target) -> None:
    monkeypatch.setitem(factory._REGISTRY, name, factory.OptimInfo(name, target, "negative control"))
    clear_cache()


def _verdict(key: str, seeds: int = 3) -> str:
    (result,) = run_claims([get_claim(key)], scale="smoke", seeds=seeds).results
    assert result.error is None, result.error
    clear_cache()
    return result.verdict


@pytest.mark.slow
def test_zero_update_optimizer_is_not_held(monkeypatch):
    _swap(monkeypatch, "diffgrad", ZeroUpdate)
    assert _verdict("diffgrad") == NOT_HELD
    _swap(monkeypatch, "soap", ZeroUpdate)
    assert _verdict("soap") == NOT_HELD


@pytest.mark.slow
def test_the_baseline_under_the_method_name_is_never_held(monkeypatch):
    _swap(monkeypatch, "diffgrad", torch.optim.Adam)
    assert _verdict("diffgrad") != HELD


class GaLoreStyleFRUGAL(FRUGAL):
    """FRUGAL without its state-free update of the residual: the claim's GaLore-style baseline itself."""

    def __init__(self, params, inactive_update_rule="no", **kwargs):
        super().__init__(params, inactive_update_rule="no", **kwargs)


class ZeroSSO(SSO):
    """Evaluates the loss on the batch and never moves a parameter."""

    def step(self, forward, loss_fn):
        with torch.no_grad():
            return loss_fn(forward())


class UnmodulatedAGVM(AGVM):
    """Never measures the halves, so every multiplier stays 1: plain SGD on the mean of the halves' gradients."""

    def observe(self, halves):
        return None


class ZeroBSVRB(BSVRB):
    """Returns a zero hypergradient estimate and never moves."""

    def step(self, batch_for, blocks=None):
        return torch.zeros_like(self.x)


class NoVarianceReductionBSVRB(BSVRB):
    """The claim's no-VR baseline under BSVRB's name."""

    def __init__(self, *args, variance_reduction=True, **kwargs):
        super().__init__(*args, variance_reduction=False, **kwargs)


@pytest.mark.slow
def test_zero_update_frugal_and_adamw8bit_are_not_held(monkeypatch):
    _swap(monkeypatch, "frugal", ZeroUpdate)
    assert _verdict("frugal") == NOT_HELD
    _swap(monkeypatch, "adamw8bit", ZeroUpdate)
    assert _verdict("adamw8bit") == NOT_HELD


@pytest.mark.slow
def test_frugal_as_its_low_rank_baseline_is_never_held(monkeypatch):
    _swap(monkeypatch, "frugal", GaLoreStyleFRUGAL)
    assert _verdict("frugal") != HELD


@pytest.mark.slow
def test_sso_that_never_moves_is_not_held(monkeypatch):
    monkeypatch.setattr(sso_claim, "SSO", ZeroSSO)
    assert _verdict("sso") == NOT_HELD


@pytest.mark.slow
def test_agvm_without_modulation_is_never_held(monkeypatch):
    monkeypatch.setattr(agvm_claim, "AGVM", UnmodulatedAGVM)
    assert _verdict("agvm") != HELD


@pytest.mark.slow
def test_broken_or_unreduced_bsvrb_is_not_held(monkeypatch):
    monkeypatch.setattr(bsvrb_claim, "BSVRB", ZeroBSVRB)
    assert _verdict("bsvrb") == NOT_HELD
    monkeypatch.setattr(bsvrb_claim, "BSVRB", NoVarianceReductionBSVRB)
    assert _verdict("bsvrb") != HELD
