"""Negative controls for the diffusion claims: a broken sampler or distiller is never held, nor an unchanged one.

Two families. Sampler comparisons (``boss``, ``autodiffusion``, ``any_size``): a time grid or tiling that returns
(nearly) the noise must come out not held; the uniform grid or the fixed tiling under the method's name must never be
held. Distillation (``scott``, ``hyper_sd``, ``instaflow``): a distiller whose student does not train must come out
not held; the baseline distiller under the method's name must never be held. The claims run at smoke scale through
the runner with the library entry they call swapped by ``monkeypatch``.
"""

import pytest
import torch

from thrifty.bench.claim import HELD, NOT_HELD
from thrifty.bench.claims import get_claim
from thrifty.bench.claims.diffusion import scott
from thrifty.bench.runner import run_claims
from thrifty.diffusion.core.solvers import uniform_grid
from thrifty.diffusion.distill import HyperSD, InstaFlow, SCott
from thrifty.diffusion.sampling import AnySizeDiffusion, AutoDiffusionSearch, BellmanStepSizes, TiledDenoiser
from thrifty.diffusion.sampling.autodiffusion import SearchResult


def _verdict(key: str, seeds: int = 3) -> str:
    (result,) = run_claims([get_claim(key)], scale="smoke", seeds=seeds).results
    assert result.error is None, result.error
    return result.verdict


def _noise_grid(steps: int) -> torch.Tensor:
    """``steps`` steps of 0.01 from t = 1 (a sub-grid of BOSS's 100-step reference): the samples stay noise."""
    return uniform_grid(steps, t_min=1.0 - steps / 100)


def _searched(grid_of):
    """An ``AutoDiffusionSearch.search`` that skips the search and returns ``grid_of(search)``."""

    def search(self, noise, progress=None):
        self.noise = noise
        return SearchResult((), grid_of(self), float("inf"), [0.0], 0)

    return search


@pytest.mark.slow
def test_a_grid_that_returns_the_noise_is_not_held(monkeypatch):
    monkeypatch.setattr(BellmanStepSizes, "grid", lambda self, steps: _noise_grid(steps))
    assert _verdict("boss") == NOT_HELD
    monkeypatch.setattr(AutoDiffusionSearch, "search", _searched(lambda s: _noise_grid(s.steps)))
    assert _verdict("autodiffusion") == NOT_HELD


@pytest.mark.slow
def test_a_tiling_that_returns_the_noise_is_not_held(monkeypatch):
    """A canvas of noise has no seams: the patch-statistics clause is what catches it."""
    generate = AnySizeDiffusion.generate

    def noise_for_fstd(self, noise, grid, solver="euler", cond=None):
        return noise.clone() if self.tiled.mode == "fstd" else generate(self, noise, grid, solver, cond)

    monkeypatch.setattr(AnySizeDiffusion, "generate", noise_for_fstd)
    assert _verdict("any_size") == NOT_HELD


@pytest.mark.slow
def test_the_baseline_grid_or_tiling_under_the_method_name_is_never_held(monkeypatch):
    monkeypatch.setattr(BellmanStepSizes, "grid", lambda self, steps: uniform_grid(steps))
    assert _verdict("boss") != HELD
    monkeypatch.setattr(AutoDiffusionSearch, "search", _searched(lambda s: s.grid_of(s.uniform_candidate())))
    assert _verdict("autodiffusion") != HELD
    monkeypatch.setattr(TiledDenoiser, "_offset", lambda self: (0, 0))  # FSTD without its offsets: fixed tiles
    assert _verdict("any_size") != HELD


@pytest.mark.slow
def test_a_distiller_whose_student_does_not_train_is_not_held(monkeypatch):
    """SCott's SDE-teacher student computes its loss but never steps; the smoke workload is lengthened (100
    iterations, a 200-iteration teacher) so that training the ODE-teacher baseline makes a difference."""
    train_step = SCott.train_step

    def frozen_when_stochastic(self, batch):
        if self.eta > 0:
            with torch.no_grad():
                return float(self.loss(batch, self.step_count))
        return train_step(self, batch)

    monkeypatch.setattr(SCott, "train_step", frozen_when_stochastic)
    monkeypatch.setitem(scott.SCALES, "smoke", (100, 200, 32))
    assert _verdict("scott") == NOT_HELD


@pytest.mark.slow
def test_the_baseline_distiller_under_the_method_name_is_never_held(monkeypatch):
    init = SCott.__init__
    monkeypatch.setattr(
        SCott, "__init__", lambda self, teacher, student, **kw: init(self, teacher, student, **{**kw, "eta": 0.0})
    )
    assert _verdict("scott") != HELD
    hyper_init = HyperSD.__init__
    monkeypatch.setattr(
        HyperSD,
        "__init__",
        lambda self, teacher, student, **kw: hyper_init(self, teacher, student, **{**kw, "stages": (1,)}),
    )
    assert _verdict("hyper_sd") != HELD
    # no reflow: the "2-rectified flow" is the 1-rectified flow itself
    monkeypatch.setattr(InstaFlow, "reflow", lambda self, pairs, steps, **kw: self.teacher)
    assert _verdict("instaflow") != HELD
