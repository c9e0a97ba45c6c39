"""Negative controls for the batching claims and the global-batch LBL claim: a broken method is never held.

The claim machinery runs at smoke scale with the method swapped where the claim module calls it: a batch-size
controller that never grows (or jumps to the cap at once), a ConAdv that never updates the weights (and, as the
positive control of an equivalence, ConAdv at staleness 0, which is the sequential baseline step for step), ghost
batch norm and regime adaptation that change nothing, weight variations that do not depend on P, and a
global-batch LBL that is the micro-batch one.
"""

import pytest
import torch

from thrifty.batching.sgd_noise import FitResult
from thrifty.bench.claim import HELD, NOT_HELD
from thrifty.bench.claims import get_claim
from thrifty.bench.claims.batching import adadagrad_norm, conadv, ghost_bn, sgd_noise
from thrifty.bench.claims.nn import global_lbl
from thrifty.bench.experiment import clear_cache
from thrifty.bench.runner import run_claims


@pytest.fixture(autouse=True)
def _one_thread():
    """Smoke runs of tiny models are fastest on one thread (and on a loaded machine, far faster)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _outcome(key: str):
    clear_cache()
    (result,) = run_claims([get_claim(key)], scale="smoke", seeds=3).results
    assert result.error is None, result.error
    clear_cache()
    return result.outcome


class NeverGrows:
    """A batch-size controller that keeps its starting size."""

    def __init__(self, batch_size: int, max_batch_size: int, **kwargs):
        self.batch_size = batch_size

    def update(self, grads) -> None:
        return None


class AtTheCap(NeverGrows):
    """A batch-size controller that takes the cap from the first step: the fixed largest batch."""

    def __init__(self, batch_size: int, max_batch_size: int, **kwargs):
        self.batch_size = max_batch_size


@pytest.mark.slow
def test_adaptive_batch_that_never_grows_is_not_held(monkeypatch):
    monkeypatch.setattr(adadagrad_norm, "AdaptiveBatchSize", NeverGrows)
    assert _outcome("adadagrad_norm").verdict == NOT_HELD


@pytest.mark.slow
def test_adaptive_batch_at_the_cap_from_the_start_is_never_held(monkeypatch):
    monkeypatch.setattr(adadagrad_norm, "AdaptiveBatchSize", AtTheCap)
    assert _outcome("adadagrad_norm").verdict != HELD


class FrozenConAdv(conadv.ConAdv):
    """Builds its adversarial examples and never updates the weights."""

    def step(self, x, y):
        self.perturb(x, y)


@pytest.mark.slow
def test_conadv_that_never_trains_is_not_held(monkeypatch):
    monkeypatch.setattr(conadv, "ConAdv", FrozenConAdv)
    assert _outcome("conadv").verdict == NOT_HELD


@pytest.mark.slow
def test_conadv_at_staleness_zero_is_the_sequential_baseline(monkeypatch):
    # An equivalence claim with the method equal to its baseline: the paired differences are exactly zero, so the
    # claim is held; this checks the pairing, as the broken ConAdv above checks that the claim can fail.
    monkeypatch.setattr(conadv, "CONADV_STALENESS", 0)
    outcome = _outcome("conadv")
    assert [c.effect for c in outcome.comparisons] == [0.0, 0.0]
    assert outcome.verdict == HELD


@pytest.mark.slow
def test_ghost_bn_and_regime_adaptation_that_change_nothing_are_never_held(monkeypatch):
    monkeypatch.setattr(ghost_bn, "convert_ghost_bn", lambda model, ghost_size: model)
    monkeypatch.setattr(
        ghost_bn, "regime_adaptation", lambda lr, epochs, decay, large, small: ghost_bn.Regime(lr, epochs, decay)
    )
    assert _outcome("ghost_bn").verdict != HELD


@pytest.mark.slow
def test_critical_temperature_that_does_not_depend_on_p_is_not_held(monkeypatch):
    def by_temperature_only(model, x, y, temperature, *args, **kwargs):
        return FitResult(True, 1, temperature, temperature, 0.5)

    monkeypatch.setattr(sgd_noise, "train_until_fitted", by_temperature_only)
    assert _outcome("sgd_noise").verdict == NOT_HELD


@pytest.mark.slow
def test_global_batch_lbl_that_is_the_micro_batch_lbl_is_not_held(monkeypatch):
    micro = global_lbl.balancing_loss
    monkeypatch.setattr(global_lbl, "balancing_loss", lambda routing, scope: micro(routing, "micro"))
    assert _outcome("global_lbl").verdict == NOT_HELD
