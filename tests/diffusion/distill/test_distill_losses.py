import itertools
import math

import pytest
import torch
from torch import nn

from thrifty.diffusion.distill._losses import (
    FeatureDistance,
    annealed_noise,
    annealing_beta,
    cauchy_loss,
    ict_discretisation,
    ict_huber_c,
    mse_loss,
    ot_coupling,
    pseudo_huber_loss,
    segment_start,
    td_scale_c,
)


def _pair(seed=0, shape=(5, 3, 2)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


def test_robust_losses_match_formulas():
    x, y = _pair()
    w = torch.arange(1.0, 6.0, dtype=torch.float64)
    c = 0.7
    sq = [float(((x[i] - y[i]) ** 2).sum()) for i in range(5)]
    huber = [math.sqrt(s + c * c) - c for s in sq]
    cauchy = [math.log(1 + s / (2 * c * c)) for s in sq]
    mse = [s / 6 for s in sq]
    assert float(pseudo_huber_loss(x, y, c)) == pytest.approx(sum(huber) / 5)
    assert float(cauchy_loss(x, y, c)) == pytest.approx(sum(cauchy) / 5)
    assert float(mse_loss(x, y)) == pytest.approx(sum(mse) / 5)
    weighted = sum(a * b for a, b in zip(cauchy, w.tolist(), strict=True)) / 5
    assert float(cauchy_loss(x, y, c, weight=w)) == pytest.approx(weighted)


def test_cauchy_gradient_vanishes_for_outliers_unlike_pseudo_huber():
    c = 1.0
    small = torch.tensor([[0.5]], requires_grad=True)
    big = torch.tensor([[50.0]], requires_grad=True)
    grads = {}
    for name, fn in (("huber", pseudo_huber_loss), ("cauchy", cauchy_loss)):
        for label, x in (("small", small), ("big", big)):
            (g,) = torch.autograd.grad(fn(x, torch.zeros_like(x), c), x)
            grads[name, label] = float(g)
    # pseudo-Huber's gradient tends to 1 for large residuals; Cauchy's decays like 2x / (x^2 + 2c^2)
    assert grads["huber", "big"] == pytest.approx(50 / math.sqrt(2501))
    assert grads["cauchy", "big"] == pytest.approx(2 * 50 / (2500 + 2))
    assert grads["cauchy", "big"] < grads["cauchy", "small"]
    assert grads["huber", "big"] > grads["huber", "small"]


def test_ict_constants_and_curriculum():
    assert ict_huber_c(3 * 32 * 32) == pytest.approx(0.00054 * math.sqrt(3072))
    total = 400_000
    k_prime = math.floor(total / (math.log2(1280 / 10) + 1))
    assert ict_discretisation(0, total) == 11
    assert ict_discretisation(k_prime - 1, total) == 11
    assert ict_discretisation(k_prime, total) == 21
    assert ict_discretisation(total - 1, total) == 1281
    with pytest.raises(ValueError):
        ict_discretisation(0, 0)


def test_td_scale_c_is_the_residual_quantile():
    x, y = _pair(1, (9, 4))
    norms = sorted(float(((x[i] - y[i]) ** 2).sum().sqrt()) for i in range(9))
    assert float(td_scale_c(x, y, quantile=0.5)) == pytest.approx(norms[4])
    assert float(td_scale_c(x, x, floor=1e-3)) == pytest.approx(1e-3)


def test_ot_coupling_is_the_optimal_permutation():
    g = torch.Generator().manual_seed(3)
    noise, data = torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g)
    coupled = ot_coupling(noise, data)
    best = min(
        sum(float(((noise[p[i]] - data[i]) ** 2).sum()) for i in range(6)) for p in itertools.permutations(range(6))
    )
    assert float(((coupled - data) ** 2).sum()) == pytest.approx(best, rel=1e-6)
    assert sorted(coupled[:, 0].tolist()) == sorted(noise[:, 0].tolist())  # a permutation of the noise
    with pytest.raises(ValueError, match="same shape"):
        ot_coupling(noise, data[:5])


def test_annealing_schedules_and_noise():
    assert annealing_beta(0, 100) == 1.0
    assert annealing_beta(25, 100) == pytest.approx(0.75)
    assert annealing_beta(500, 100) == 0.0
    assert annealing_beta(50, 100, "cos") == pytest.approx(0.5)
    assert annealing_beta(100, 100, "exp") == pytest.approx(math.exp(-1))
    with pytest.raises(ValueError, match="kind"):
        annealing_beta(1, 10, "step")
    z = torch.randn(4, 2)
    assert torch.equal(annealed_noise(z, 0.0), z)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    xi = torch.randn(z.shape, generator=g2)
    assert torch.allclose(annealed_noise(z, 0.6, g1), 0.8 * z + 0.6 * xi)
    big = annealed_noise(torch.randn(200_000), 0.6, torch.Generator().manual_seed(0))
    assert float(big.std()) == pytest.approx(1.0, abs=0.01)  # stays standard normal


def test_segment_start_boundaries():
    t = torch.tensor([1.0, 0.875, 0.874, 0.5, 0.5001, 0.126, 0.125, 0.01])
    assert segment_start(t, 8).tolist() == [0.875, 0.75, 0.75, 0.375, 0.5, 0.125, 0.0, 0.0]
    assert segment_start(t, 1).tolist() == [0.0] * 8
    assert segment_start(t, 2).tolist() == [0.5, 0.5, 0.5, 0.0, 0.5, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError):
        segment_start(t, 0)


def test_feature_distance_is_frozen_feature_l2_plus_l2():
    phi = nn.Linear(3, 2)
    d = FeatureDistance(phi, l2_weight=0.5)
    x, y = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3)
    with torch.no_grad():
        expected = ((phi(x) - phi(y)) ** 2).mean(1) + 0.5 * ((x - y) ** 2).mean(1)
    loss = d(x, y)
    assert float(loss.detach()) == pytest.approx(float(expected.mean()), rel=1e-6)
    loss.backward()
    assert x.grad is not None and all(p.grad is None and not p.requires_grad for p in phi.parameters())
    assert float(FeatureDistance()(x.detach(), y)) == pytest.approx(float(mse_loss(x.detach(), y)))
