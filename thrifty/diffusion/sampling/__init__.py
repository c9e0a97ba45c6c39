"""Training-free samplers on the diffusion core: BOSS's Bellman-optimal step sizes (``boss``), AutoDiffusion's
evolutionary time-step search (``autodiffusion``) and Any-Size-Diffusion's fast seamless tiling (``any_size``)."""

from thrifty.diffusion.sampling.any_size import AnySizeDiffusion, TiledDenoiser, seam_energy
from thrifty.diffusion.sampling.autodiffusion import AutoDiffusionSearch, SkipPlanDenoiser, search_skips
from thrifty.diffusion.sampling.boss import BellmanStepSizes, bellman_cost_matrix, bellman_path, straighten

__all__ = [
    "AnySizeDiffusion",
    "AutoDiffusionSearch",
    "BellmanStepSizes",
    "SkipPlanDenoiser",
    "TiledDenoiser",
    "bellman_cost_matrix",
    "bellman_path",
    "search_skips",
    "seam_energy",
    "straighten",
]
