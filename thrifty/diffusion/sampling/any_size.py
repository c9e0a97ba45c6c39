"""Any-Size-Diffusion's fast seamless tiled diffusion (FSTD) (Zheng et al., arXiv 2308.16582).

A denoiser trained on ``tile x tile`` inputs generates a larger canvas by denoising tiles and stitching their
predictions at every step. Three tilings (``TiledDenoiser(mode=...)``):

- ``"fixed"``: non-overlapping tiles on a fixed grid (1 evaluation per tile position; seams where tiles meet).
- ``"overlap"``: tiles with stride ``tile - overlap``, predictions blended with Gaussian tile weights (the baseline
  FSTD replaces; about ``(tile / stride)^2`` times the evaluations).
- ``"fstd"``: non-overlapping tiles shifted by a random offset ``(dx, dy)`` drawn in ``[0, overlap)`` at each step,
  the offset reset to 0 every ``reset_every`` steps (``random_reset_step = 4``), as in the official
  ``p_mean_variance_canvas_accelerate``: tile k starts at ``min(max(k tile + offset, 0), size - tile)`` (the last tile
  is clamped to the border, blending with Gaussian weights where it overlaps its neighbour), and pixels no tile covers
  (``[0, offset)``) keep the previous step's prediction (the official ``noise_reference``). Seams move every step, so
  they do not accumulate, at the cost of the fixed tiling.

Stitching happens on the denoiser's raw prediction (its ``prediction_type``), as the official code stitches the noise
prediction. The inner denoiser receives tiles as ``(n, C, tile, tile)``, or flattened to ``(n, C * tile^2)`` with
``flat=True``. ``tile_evaluations`` counts single-tile evaluations. ``seam_energy(canvas, tile)`` measures the seams.
ARAD (aspect-ratio bucketed fine-tuning of a text-to-image model) is not implemented: it needs a T2I model.
"""

from __future__ import annotations

import math
import random
from typing import Any

import torch
from torch import Tensor

from thrifty.diffusion.core.denoiser import DenoiserWrapper
from thrifty.diffusion.core.schedules import as_time

__all__ = ["AnySizeDiffusion", "TiledDenoiser", "gaussian_tile_weights", "seam_energy", "tile_starts"]

MODES = ("fixed", "overlap", "fstd")


def gaussian_tile_weights(tile: int, var: float = 0.01) -> Tensor:
    """The official ``_gaussian_weights``: ``exp(-(i - m)^2 / tile^2 / (2 var)) / sqrt(2 pi var)`` per axis, outer
    product (x midpoint ``(tile - 1) / 2``, y midpoint ``tile / 2`` as in the official code)."""
    idx = torch.arange(tile, dtype=torch.float64)

    def axis(mid: float) -> Tensor:
        return torch.exp(-((idx - mid) ** 2) / tile**2 / (2 * var)) / math.sqrt(2 * math.pi * var)

    return torch.outer(axis(tile / 2), axis((tile - 1) / 2)).float()


def tile_starts(size: int, tile: int, mode: str, overlap: int = 0, offset: int = 0) -> list[int]:
    """Start positions of the tiles along one axis of length ``size`` (see the module docstring)."""
    if tile > size:
        raise ValueError(f"tile {tile} is larger than the canvas side {size}")
    if mode == "overlap":
        stride = tile - overlap
        if stride < 1:
            raise ValueError(f"overlap must be smaller than the tile, got {overlap} >= {tile}")
        starts = list(range(0, size - tile + 1, stride))
        if starts[-1] != size - tile:
            starts.append(size - tile)
        return starts
    n = math.ceil(size / tile)
    return sorted({min(max(k * tile + offset, 0), size - tile) for k in range(n)})


class TiledDenoiser(DenoiserWrapper):
    """A denoiser over a ``(B, C, H, W)`` canvas built from a ``tile``-sized denoiser (see the module docstring).

    ``reset()`` restarts the step counter and the reference prediction (``sample`` does not call it: call it, or use
    ``AnySizeDiffusion.generate``, before each canvas).
    """

    def __init__(
        self,
        denoiser: Any,
        tile: int,
        mode: str = "fstd",
        overlap: int | None = None,
        reset_every: int = 4,
        flat: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(denoiser)
        if mode not in MODES:
            raise ValueError(f"unknown tiling mode {mode!r}; expected one of {', '.join(MODES)}")
        overlap = tile // 2 if overlap is None else overlap
        if mode != "fixed" and not 0 < overlap < tile:
            raise ValueError(f"overlap must lie in (0, tile) for mode {mode!r}, got {overlap}")
        if reset_every < 1:
            raise ValueError(f"reset_every must be >= 1, got {reset_every}")
        self.tile, self.mode, self.overlap = tile, mode, overlap
        self.reset_every, self.flat, self.seed = reset_every, flat, seed
        self.register_buffer("weights", gaussian_tile_weights(tile), persistent=False)
        self.reset()

    def reset(self) -> None:
        self.step_count = 0
        self.tile_evaluations = 0
        self.reference: Tensor | None = None
        self.rng = random.Random(self.seed)
        self.offsets: list[tuple[int, int]] = []

    def _offset(self) -> tuple[int, int]:
        if self.mode != "fstd":
            return 0, 0
        dy, dx = self.rng.randint(0, self.overlap - 1), self.rng.randint(0, self.overlap - 1)
        if self.step_count % self.reset_every == 0:
            dy, dx = 0, 0
        return dy, dx

    def forward(self, x: Tensor, t: Tensor | float, cond: Any = None) -> Tensor:
        b, c, h, w = x.shape
        dy, dx = self._offset()
        self.offsets.append((dy, dx))
        self.step_count += 1
        ys = tile_starts(h, self.tile, self.mode, self.overlap, dy)
        xs = tile_starts(w, self.tile, self.mode, self.overlap, dx)
        tiles = torch.stack([x[:, :, y : y + self.tile, z : z + self.tile] for y in ys for z in xs], 1)
        n = len(ys) * len(xs)
        flat_tiles = tiles.reshape(b * n, c, self.tile, self.tile)
        inner = flat_tiles.reshape(b * n, -1) if self.flat else flat_tiles
        t_in = as_time(t, x)
        t_in = t_in.repeat_interleave(n) if t_in.dim() == 1 else t_in
        cond_in = cond.repeat_interleave(n, 0) if isinstance(cond, Tensor) else cond
        out = self.denoiser(inner, t_in, cond_in).reshape(b, n, c, self.tile, self.tile)
        self.tile_evaluations += b * n
        weight = self.weights.to(x.dtype) if self.mode != "fixed" else torch.ones_like(self.weights, dtype=x.dtype)
        total = torch.zeros_like(x)
        norm = torch.zeros(1, 1, h, w, dtype=x.dtype, device=x.device)
        k = 0
        for y in ys:
            for z in xs:
                total[:, :, y : y + self.tile, z : z + self.tile] += out[:, k] * weight
                norm[:, :, y : y + self.tile, z : z + self.tile] += weight
                k += 1
        pred = torch.where(norm > 0, total / norm.clamp_min(1e-20), total)
        if self.reference is not None:
            pred = torch.where(norm > 0, pred, self.reference)
        self.reference = pred
        return pred


class AnySizeDiffusion:
    """Generate canvases larger than a denoiser's tile with FSTD (or a baseline tiling), one call per canvas batch."""

    def __init__(
        self,
        denoiser: Any,
        tile: int,
        mode: str = "fstd",
        overlap: int | None = None,
        reset_every: int = 4,
        flat: bool = False,
        seed: int = 0,
    ) -> None:
        self.tiled = TiledDenoiser(denoiser, tile, mode, overlap, reset_every, flat, seed)

    @torch.no_grad()
    def generate(self, noise: Tensor, grid: Tensor, solver: str = "euler", cond: Any = None) -> Tensor:
        """Integrate the canvas ``noise`` ``(B, C, H, W)`` over ``grid``; ``self.tiled.tile_evaluations`` counts."""
        from thrifty.diffusion.core.solvers import sample

        self.tiled.reset()
        return sample(self.tiled, noise, grid, solver, cond)


def seam_energy(canvas: Tensor, tile: int) -> float:
    """Excess gradient at the strongest tile phase: for horizontal and vertical neighbour differences ``|x_{j+1} -
    x_j|``, the mean per phase ``(j + 1) mod tile``; the seam energy is the largest phase mean minus the mean over
    phases, averaged over both axes (0 for a stationary canvas; tiling seams at a fixed phase raise it)."""
    x = canvas.double()
    energies = []
    for dim in (-1, -2):
        d = (x.narrow(dim, 1, x.shape[dim] - 1) - x.narrow(dim, 0, x.shape[dim] - 1)).abs()
        d = d.movedim(dim, -1)
        phase = (torch.arange(1, x.shape[dim]) % tile).to(x.device)
        means = torch.stack([d[..., phase == p].mean() for p in range(tile)])
        energies.append(float(means.max() - means.mean()))
    return sum(energies) / len(energies)
