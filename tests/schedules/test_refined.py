"""Schedule refinement (arXiv 2310.07831): the properties the paper derives, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from thrifty.schedules import RefinedLR, median_smooth, refine_schedule


@pytest.mark.parametrize("rule", ["l2", "l1"])
@pytest.mark.parametrize("T", [2, 7, 100])
def test_constant_norms_give_exactly_linear_decay(rule, T):
    eta = refine_schedule(np.full(T, 3.7), rule=rule)
    assert np.allclose(eta, np.linspace(1.0, 0.0, T), rtol=0, atol=1e-12)


def _noisy(T: int = 200, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.exp(rng.normal(size=T)) * np.linspace(1.0, 2.0, T)


@pytest.mark.parametrize("rule", ["l2", "l1"])
def test_output_is_nonnegative_ends_at_zero_and_peaks_at_one(rule):
    eta = refine_schedule(_noisy(), rule=rule, tau=0.05)
    assert eta.min() >= 0 and eta[-1] == 0 and eta.max() == pytest.approx(1.0)


@pytest.mark.parametrize("rule", ["l2", "l1"])
def test_scaling_the_norms_changes_nothing(rule):
    g = _noisy()
    assert np.allclose(refine_schedule(g, rule=rule), refine_schedule(1e6 * g, rule=rule), rtol=1e-12)
    assert np.allclose(refine_schedule(g, rule=rule), refine_schedule(torch.tensor(1e-4 * g), rule=rule))


def test_norms_rising_at_the_end_give_a_faster_final_anneal():
    T = 100
    g = np.ones(T)
    g[80:] = np.linspace(1.0, 4.0, 20)
    eta = refine_schedule(g, tau=0.0)
    linear = np.linspace(1.0, 0.0, T)
    assert np.all(eta[81:-1] < linear[81:-1])
    assert eta[90] < 0.5 * linear[90]


def test_large_early_norms_give_warmup():
    # eta_t grows with w_t = G_t^-2, so it is the *large* norms of early training that give warm-up
    T = 100
    g = np.ones(T)
    g[:20] = np.linspace(10.0, 1.0, 20)
    eta = refine_schedule(g, tau=0.0)
    assert eta[0] < 0.1 and np.all(np.diff(eta[:15]) > 0) and int(np.argmax(eta)) >= 15


def test_median_filter_removes_spikes_and_keeps_length():
    g = np.ones(50)
    g[[10, 30]] = 100.0
    smooth = median_smooth(g, tau=0.1)
    assert smooth.shape == (50,) and np.allclose(smooth, 1.0)
    assert np.array_equal(median_smooth(g, tau=0.0), g)


@pytest.mark.parametrize(
    "norms, match",
    [
        ([], "non-empty"),
        ([1.0, math.nan, 2.0], "finite"),
        ([1.0, math.inf], "finite"),
        ([1.0, -2.0], "positive"),
        ([[1.0, 2.0]], "1-D"),
        ([1.0], "at least 2 steps"),
    ],
)
def test_bad_norms_are_clear_errors(norms, match):
    with pytest.raises(ValueError, match=match):
        refine_schedule(norms)


def test_bad_rule_and_tau():
    with pytest.raises(ValueError, match="rule must be one of l2, l1"):
        refine_schedule([1.0, 2.0], rule="l3")
    with pytest.raises(ValueError, match="tau"):
        refine_schedule([1.0, 2.0], tau=-0.1)


def test_refined_lr_applies_and_stretches_the_schedule():
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.5)
    sched = RefinedLR(opt, [1.0, 0.5, 0.0], total_steps=5)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5, 0.375, 0.25, 0.125, 0.0])
    with pytest.raises(ValueError, match="total_steps"):
        RefinedLR(torch.optim.SGD([p], lr=0.5), [1.0, 0.0], total_steps=-3)
    with pytest.raises(ValueError, match="non-negative"):
        RefinedLR(torch.optim.SGD([p], lr=0.5), [1.0, -1.0])
