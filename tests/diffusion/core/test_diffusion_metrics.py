import pytest
import torch
from torch import nn

from thrifty.diffusion.core.data import checkerboard, digits_flat, digits_images, eight_gaussians, toy2d, two_moons
from thrifty.diffusion.core.metrics import (
    count_macs,
    count_params,
    digits_classifier,
    digits_fd,
    frechet_distance,
    mode_coverage,
    sliced_wasserstein,
    straightness,
)


def test_sliced_wasserstein_of_a_shift_is_its_projected_length():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 2, generator=g)
    shift = torch.tensor([3.0, 0.0])
    # SW2 of a pure translation: sqrt(E_theta (theta . shift)^2) = |shift| / sqrt(D)
    assert sliced_wasserstein(x, x + shift, 1000, g) == pytest.approx(3.0 / 2**0.5, rel=0.05)
    assert sliced_wasserstein(x, x.flip(0), 64, g) == 0.0
    assert sliced_wasserstein(x, x[:1000], 64, g) < 0.1
    with pytest.raises(ValueError, match="dimension"):
        sliced_wasserstein(x, torch.zeros(3, 3))


def test_frechet_distance_of_gaussians_matches_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200_000, 3, generator=g)
    b = 2 * torch.randn(200_000, 3, generator=g) + 1
    # |mu|^2 + tr(I + 4I - 2 * 2I) = 3 + 3
    assert frechet_distance(a, b) == pytest.approx(6.0, rel=0.02)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_mode_coverage_and_toys():
    mix = eight_gaussians()
    g = torch.Generator().manual_seed(0)
    full = mode_coverage(mix.sample(800, g), mix.means, 0.5)
    assert full == {"coverage": 1.0, "in_mode": 1.0}
    half = mode_coverage(mix.means[:4].repeat(50, 1), mix.means, 0.5)
    assert half["coverage"] == 0.5 and half["in_mode"] == 1.0
    assert mode_coverage(torch.zeros(10, 2), mix.means, 0.5)["in_mode"] == 0.0
    board = checkerboard(500, g)
    cells = torch.floor(board + 2).long()
    assert board.shape == (500, 2) and bool(((cells.sum(1) % 2) == 0).all())
    assert two_moons(100, g).shape == (100, 2) and toy2d("grid_gaussians", 7, g).shape == (7, 2)
    with pytest.raises(ValueError, match="unknown 2-D toy"):
        toy2d("spiral", 3)


def test_straightness_is_zero_on_lines_and_positive_on_bends():
    grid = torch.tensor([1.0, 0.5, 0.0])
    a, b = torch.randn(5, 2), torch.randn(5, 2)
    assert straightness([a, (a + b) / 2, b], grid) == pytest.approx(0.0, abs=1e-12)
    # a bend through c: slopes (a - c)/0.5, (c - b)/0.5; chord a - b; value = mean |slope_i - chord|^2 / 2
    c = torch.zeros(5, 2)
    expected = (((2 * (a - c) - (a - b)) ** 2).sum(1) * 0.5 + ((2 * (c - b) - (a - b)) ** 2).sum(1) * 0.5).mean()
    assert straightness([a, c, b], grid) == pytest.approx(float(expected), rel=1e-6)


def test_params_and_macs():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    assert count_params(net) == 4 * 8 + 8 + 8 * 2 + 2
    assert count_macs(net, torch.zeros(3, 4)) == 3 * (4 * 8 + 8 * 2)
    conv = nn.Conv2d(2, 6, 3, padding=1, groups=2)
    assert count_macs(conv, torch.zeros(1, 2, 5, 5)) == 6 * 25 * 1 * 9


def test_digits_classifier_is_cached_and_fd_separates_real_from_noise(tmp_path, monkeypatch):
    monkeypatch.setenv("THRIFTY_CACHE_DIR", str(tmp_path))
    from thrifty.diffusion.core import metrics

    monkeypatch.setattr(metrics, "_CLASSIFIER", {})
    clf = digits_classifier()
    assert (tmp_path / "diffusion" / "digits_classifier_v1.pt").exists()
    x_val, y_val = digits_flat("val")
    assert float((clf(x_val).argmax(1) == y_val).float().mean()) > 0.93
    assert digits_images("val")[0].shape == (360, 1, 8, 8) and float(x_val.min()) == -1.0
    x_train, _ = digits_flat("train")
    real = digits_fd(x_val, x_train)
    noisy = digits_fd((x_val + 0.5 * torch.randn_like(x_val)).clamp(-1, 1), x_train)
    assert real < noisy / 5
