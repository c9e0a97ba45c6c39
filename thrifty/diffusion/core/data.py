"""Substrates for the diffusion field: 2-D toy distributions, Gaussian mixtures with an exact teacher, 8x8 digits.

- ``GaussianMixture(means, stds, weights)``: ``sample(n, generator)`` and ``denoiser(schedule)`` (the exact
  ``GaussianMixtureDenoiser`` of the same mixture), ``means`` for mode-coverage metrics.
- ``eight_gaussians()``, ``grid_gaussians()``: standard mixtures (modes on a circle of radius 2 / a 5x5 grid).
- ``two_moons(n, generator)``, ``checkerboard(n, generator)``: 2-D point clouds without a closed-form teacher.
- ``toy2d(name, n, generator)``: one of ``TOY2D`` by name.
- ``StationaryField(size, length_scale)``: a zero-mean Gaussian random field on a ``size x size`` grid with squared-
  exponential covariance ``exp(-|p - q|^2 / (2 l^2))``; ``sample(n)`` draws ``(n, 1, H, W)`` canvases, ``tile_denoiser``
  is the exact denoiser of one ``tile x tile`` window (the substrate of tiled generation).
- ``digits_images()``: scikit-learn's 1,797 8x8 digits as ``(N, 1, 8, 8)`` in [-1, 1] with labels; ``digits_flat()``
  the same as ``(N, 64)`` rows. Training and evaluation splits follow ``thrifty.data.digits`` (fixed, stratified).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from thrifty.data.digits import load_digits_split
from thrifty.diffusion.core.denoiser import GaussianDenoiser, GaussianMixtureDenoiser
from thrifty.diffusion.core.schedules import NoiseSchedule

__all__ = [
    "TOY2D",
    "GaussianMixture",
    "StationaryField",
    "checkerboard",
    "digits_flat",
    "digits_images",
    "eight_gaussians",
    "grid_gaussians",
    "toy2d",
    "two_moons",
]


class GaussianMixture:
    """A diagonal Gaussian mixture whose noised denoiser is known exactly."""

    def __init__(self, means: Tensor, stds: Tensor | float, weights: Tensor | None = None) -> None:
        self.means = torch.as_tensor(means, dtype=torch.float32)
        if self.means.dim() != 2:
            raise ValueError(f"means must be (K, D), got shape {tuple(self.means.shape)}")
        stds = torch.as_tensor(stds, dtype=torch.float32)
        self.stds = (stds.reshape(-1, 1) if stds.dim() <= 1 else stds).expand_as(self.means).clone()
        w = torch.ones(len(self.means)) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        self.weights = w / w.sum()

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        return self.means[k] + self.stds[k] * torch.randn(n, self.dim, generator=generator)

    def denoiser(self, schedule: NoiseSchedule | None = None) -> GaussianMixtureDenoiser:
        """The exact ``x0``-predicting denoiser of this mixture under ``schedule`` (rectified flow by default)."""
        return GaussianMixtureDenoiser(self.means, self.stds, self.weights, schedule)


def eight_gaussians(radius: float = 2.0, std: float = 0.1) -> GaussianMixture:
    """Eight equal modes on a circle of ``radius``."""
    angles = torch.arange(8) * (2 * math.pi / 8)
    return GaussianMixture(radius * torch.stack([angles.cos(), angles.sin()], 1), std)


def grid_gaussians(size: int = 5, spacing: float = 1.0, std: float = 0.05) -> GaussianMixture:
    """``size x size`` equal modes on a centred square grid."""
    axis = (torch.arange(size) - (size - 1) / 2) * spacing
    gx, gy = torch.meshgrid(axis, axis, indexing="ij")
    return GaussianMixture(torch.stack([gx.flatten(), gy.flatten()], 1), std)


def two_moons(n: int, generator: torch.Generator | None = None, noise: float = 0.05) -> Tensor:
    """Two interleaved half circles (as scikit-learn's ``make_moons``), centred and scaled to unit spread."""
    upper = torch.rand(n, generator=generator) < 0.5
    angle = torch.rand(n, generator=generator) * math.pi
    x = torch.where(upper, angle.cos(), 1 - angle.cos())
    y = torch.where(upper, angle.sin(), 0.5 - angle.sin())
    pts = torch.stack([x - 0.5, y - 0.25], 1) * 1.5
    return pts + noise * torch.randn(n, 2, generator=generator)


def checkerboard(n: int, generator: torch.Generator | None = None, cells: int = 4) -> Tensor:
    """Uniform on the black cells of a ``cells x cells`` board on [-2, 2]^2."""
    out = torch.empty(0, 2)
    while len(out) < n:
        pts = torch.rand(2 * n, 2, generator=generator) * 4 - 2
        idx = torch.floor((pts + 2) * cells / 4).long()
        out = torch.cat([out, pts[(idx.sum(1) % 2) == 0]])
    return out[:n]


class StationaryField:
    """Zero-mean stationary Gaussian random field on a ``height x width`` grid, squared-exponential covariance."""

    def __init__(self, height: int, width: int | None = None, length_scale: float = 2.0, jitter: float = 1e-4) -> None:
        self.height, self.width, self.length_scale, self.jitter = height, width or height, length_scale, jitter
        self._chol = torch.linalg.cholesky(self.covariance(self.height, self.width))

    def covariance(self, height: int, width: int) -> Tensor:
        """Covariance of the field's values on a ``height x width`` window, pixels in row-major order (float64)."""
        ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        pts = torch.stack([ys.flatten(), xs.flatten()], 1).double()
        cov = torch.exp(-(torch.cdist(pts, pts) ** 2) / (2 * self.length_scale**2))
        return cov + self.jitter * torch.eye(len(pts), dtype=torch.float64)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn(n, self.height * self.width, generator=generator, dtype=torch.float64)
        return (z @ self._chol.T).float().reshape(n, 1, self.height, self.width)

    def tile_denoiser(self, tile: int, schedule: NoiseSchedule | None = None) -> GaussianDenoiser:
        """Exact denoiser of one ``tile x tile`` window, on flat ``(B, tile * tile)`` inputs."""
        return GaussianDenoiser(torch.zeros(tile * tile), self.covariance(tile, tile), schedule)


TOY2D = ("eight_gaussians", "grid_gaussians", "two_moons", "checkerboard")


def toy2d(name: str, n: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` samples of the 2-D toy distribution ``name`` (one of ``TOY2D``)."""
    if name == "eight_gaussians":
        return eight_gaussians().sample(n, generator)
    if name == "grid_gaussians":
        return grid_gaussians().sample(n, generator)
    if name == "two_moons":
        return two_moons(n, generator)
    if name == "checkerboard":
        return checkerboard(n, generator)
    raise ValueError(f"unknown 2-D toy {name!r}; expected one of {', '.join(TOY2D)}")


def digits_flat(split: str = "train") -> tuple[Tensor, Tensor]:
    """``(x, y)``: digits as ``(N, 64)`` rows in [-1, 1] (``split`` ``"train"``: 1,437, ``"val"``: 360, ``"all"``)."""
    x_train, y_train, x_val, y_val = load_digits_split()
    if split == "train":
        x, y = x_train, y_train
    elif split == "val":
        x, y = x_val, y_val
    elif split == "all":
        x, y = torch.cat([x_train, x_val]), torch.cat([y_train, y_val])
    else:
        raise ValueError(f"split must be train, val or all, got {split!r}")
    return x * 2 - 1, y


def digits_images(split: str = "train") -> tuple[Tensor, Tensor]:
    """``(x, y)``: digits as ``(N, 1, 8, 8)`` images in [-1, 1]."""
    x, y = digits_flat(split)
    return x.reshape(-1, 1, 8, 8), y
