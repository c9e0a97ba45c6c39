"""Negative controls for the optimizer-comparison claims: a broken optimizer is never held, nor an unchanged one.

The claim machinery runs at smoke scale with the method's registry entry swapped: an optimizer whose update is
zero must come out not held; the baseline optimizer itself, run under the method's name, must never be held.
"""

import pytest
import torch

from thrifty.bench.claim import HELD, NOT_HELD
from thrifty.bench.claims import get_claim
from thrifty.bench.experiment import clear_cache
from thrifty.bench.runner import run_claims
from thrifty.optim import factory


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
