import math

import pytest
import torch

from thrifty.diffusion.core.data import StationaryField
from thrifty.diffusion.core.denoiser import Denoiser
from thrifty.diffusion.core.schedules import RectifiedFlowSchedule
from thrifty.diffusion.core.solvers import sample, uniform_grid
from thrifty.diffusion.sampling.any_size import (
    AnySizeDiffusion,
    TiledDenoiser,
    gaussian_tile_weights,
    seam_energy,
    tile_starts,
)


class _Pointwise(Denoiser):
    """x0 = x / 2 pixel by pixel: tiling cannot change its output."""

    def __init__(self):
        super().__init__(RectifiedFlowSchedule(), "x0")

    def forward(self, x, t, cond=None):
        return x / 2


def test_tile_starts_follow_the_official_layout():
    assert tile_starts(32, 8, "fixed") == [0, 8, 16, 24]
    assert tile_starts(32, 8, "overlap", overlap=4) == [0, 4, 8, 12, 16, 20, 24]
    assert tile_starts(30, 8, "overlap", overlap=4) == [0, 4, 8, 12, 16, 20, 22]
    # FSTD: k * tile + offset, clamped to [0, size - tile]
    assert tile_starts(32, 8, "fstd", overlap=4, offset=3) == [3, 11, 19, 24]
    with pytest.raises(ValueError, match="larger than the canvas"):
        tile_starts(4, 8, "fixed")


def test_gaussian_weights_match_the_official_formula():
    w = gaussian_tile_weights(8)
    i, j = 2, 5
    fy = math.exp(-((i - 4.0) ** 2) / 64 / 0.02) / math.sqrt(2 * math.pi * 0.01)
    fx = math.exp(-((j - 3.5) ** 2) / 64 / 0.02) / math.sqrt(2 * math.pi * 0.01)
    assert float(w[i, j]) == pytest.approx(fy * fx, rel=1e-5)


@pytest.mark.parametrize("mode", ["fixed", "overlap"])
def test_pointwise_denoiser_is_tiling_invariant_and_evaluations_are_counted(mode):
    noise = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    asd = AnySizeDiffusion(_Pointwise(), 8, mode, overlap=4)
    out = asd.generate(noise, uniform_grid(5))
    assert torch.allclose(out, sample(_Pointwise(), noise, uniform_grid(5)), atol=1e-6)
    per_step = {"fixed": 16, "overlap": 49}[mode]
    assert asd.tiled.tile_evaluations == 2 * 5 * per_step


def test_fstd_uncovered_pixels_keep_the_previous_prediction():
    tiled = TiledDenoiser(_Pointwise(), 8, "fstd", overlap=4, seed=0)
    x1, x2 = torch.randn(1, 1, 32, 32), torch.randn(1, 1, 32, 32)
    first = tiled(x1, 0.5)  # step 0: offset reset to 0, every pixel covered
    assert tiled.offsets[0] == (0, 0) and torch.allclose(first, x1 / 2, atol=1e-6)
    while True:
        second = tiled(x2, 0.4)
        dy, dx = tiled.offsets[-1]
        if dy > 0 and dx > 0:
            break
        first = second
    covered = torch.zeros(32, 32, dtype=torch.bool)
    covered[dy:, dx:] = True
    assert torch.allclose(second[..., covered], (x2 / 2)[..., covered], atol=1e-6)
    assert torch.equal(second[..., ~covered], first[..., ~covered])
    assert tiled.tile_evaluations == 16 * len(tiled.offsets)


def test_fstd_offsets_reset_every_four_steps():
    tiled = TiledDenoiser(_Pointwise(), 8, "fstd", overlap=4, reset_every=4, seed=3)
    x = torch.zeros(1, 1, 16, 16)
    for _ in range(10):
        tiled(x, 0.5)
    assert [tiled.offsets[k] for k in (0, 4, 8)] == [(0, 0)] * 3
    assert all(0 <= a < 4 and 0 <= b < 4 for a, b in tiled.offsets)
    assert any(o != (0, 0) for o in tiled.offsets)
    with pytest.raises(ValueError, match="unknown tiling mode"):
        TiledDenoiser(_Pointwise(), 8, "mosaic")
    with pytest.raises(ValueError, match="overlap"):
        TiledDenoiser(_Pointwise(), 8, "overlap", overlap=8)


def test_seam_energy_detects_tile_seams():
    field = StationaryField(32, length_scale=2.0)
    smooth = field.sample(16, torch.Generator().manual_seed(0))
    assert seam_energy(smooth, 8) < 0.05
    # a step of 1 across every 8th column and row: the phase-0 mean difference rises by 1 on both axes
    steps = (torch.arange(32) // 8).float()
    blocky = torch.zeros(1, 1, 32, 32) + steps[None, None, None, :] + steps[None, None, :, None]
    assert seam_energy(blocky, 8) == pytest.approx(1 - 1 / 8)


def test_fstd_has_lower_seams_than_fixed_tiles_on_a_gaussian_field():
    field = StationaryField(24, length_scale=2.0)
    den = field.tile_denoiser(8)
    noise = torch.randn(16, 1, 24, 24, generator=torch.Generator().manual_seed(0))
    seams = {}
    for mode in ("fixed", "fstd"):
        out = AnySizeDiffusion(den, 8, mode, overlap=4, flat=True).generate(noise, uniform_grid(12))
        seams[mode] = seam_energy(out, 8)
    assert seams["fstd"] < 0.5 * seams["fixed"]
