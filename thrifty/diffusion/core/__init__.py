"""The diffusion field's shared core: one time convention (t in [0, 1], t = 1 is noise), denoisers, solvers, data,
metrics and cached teachers. Every sampler and distiller of ``thrifty.diffusion`` builds on these pieces.

Interface in brief (details in each module's docstring):

- ``schedules``: ``NoiseSchedule`` (``alpha(t)``, ``sigma(t)``, ``log_snr(t)``, ``derivatives(t)``,
  ``t_from_log_snr``, ``timestep(t)``) with ``VPSchedule`` (linear / scaled_linear / cosine betas),
  ``EDMSchedule``, ``RectifiedFlowSchedule``.
- ``denoiser``: ``Denoiser`` (``nn.Module``; ``forward(x, t, cond=None)`` returns its ``prediction_type`` in
  {epsilon, x0, v, velocity}; ``predict`` returns a ``Prediction`` with ``x0``, ``eps``, ``velocity``, ``v``),
  conversions ``to_x0_eps`` / ``from_x0_eps`` / ``convert``, adapters ``ModuleDenoiser``, ``DiffusersDenoiser``,
  exact ``GaussianMixtureDenoiser`` and ``GaussianDenoiser``.
- ``solvers``: grids (``uniform_grid``, ``edm_grid``, ``logsnr_grid``, ``check_grid``), ``Euler`` (DDIM),
  ``Heun``, ``DPMSolverPP2M``, ``Stochastic``; ``sample(denoiser, noise, grid, solver)``;
  ``ClassifierFreeGuidance``.
- ``data``: ``GaussianMixture``, ``eight_gaussians``, ``two_moons``, ``checkerboard``, ``toy2d``, digits,
  ``StationaryField`` (Gaussian random field canvases with an exact window denoiser).
- ``metrics``: ``sliced_wasserstein``, ``mode_coverage``, ``frechet_distance``, ``digits_fd``, ``straightness``,
  ``CountingDenoiser``, ``count_params``, ``count_macs``.
- ``teachers``: ``TimeMLP``, ``train_diffusion``, ``train_flow_matching``, cached ``toy2d_teacher`` /
  ``digits_teacher``.
"""

from thrifty.diffusion.core.data import (
    TOY2D,
    GaussianMixture,
    StationaryField,
    checkerboard,
    digits_flat,
    digits_images,
    eight_gaussians,
    grid_gaussians,
    toy2d,
    two_moons,
)
from thrifty.diffusion.core.denoiser import (
    PREDICTION_TYPES,
    Denoiser,
    DenoiserWrapper,
    DiffusersDenoiser,
    GaussianDenoiser,
    GaussianMixtureDenoiser,
    ModuleDenoiser,
    Prediction,
    convert,
    from_x0_eps,
    to_x0_eps,
)
from thrifty.diffusion.core.metrics import (
    CountingDenoiser,
    count_macs,
    count_params,
    digits_fd,
    frechet_distance,
    mode_coverage,
    sliced_wasserstein,
    straightness,
)
from thrifty.diffusion.core.schedules import EDMSchedule, NoiseSchedule, RectifiedFlowSchedule, VPSchedule
from thrifty.diffusion.core.solvers import (
    ClassifierFreeGuidance,
    DPMSolverPP2M,
    Euler,
    Heun,
    Solver,
    Stochastic,
    check_grid,
    edm_grid,
    get_solver,
    logsnr_grid,
    sample,
    uniform_grid,
)
from thrifty.diffusion.core.teachers import (
    TimeMLP,
    digits_teacher,
    toy2d_teacher,
    train_diffusion,
    train_flow_matching,
)

__all__ = [
    "PREDICTION_TYPES",
    "ClassifierFreeGuidance",
    "CountingDenoiser",
    "DPMSolverPP2M",
    "Denoiser",
    "DenoiserWrapper",
    "DiffusersDenoiser",
    "EDMSchedule",
    "Euler",
    "GaussianDenoiser",
    "GaussianMixture",
    "GaussianMixtureDenoiser",
    "Heun",
    "ModuleDenoiser",
    "NoiseSchedule",
    "Prediction",
    "RectifiedFlowSchedule",
    "Solver",
    "StationaryField",
    "Stochastic",
    "TOY2D",
    "TimeMLP",
    "VPSchedule",
    "check_grid",
    "checkerboard",
    "convert",
    "count_macs",
    "count_params",
    "digits_fd",
    "digits_flat",
    "digits_images",
    "digits_teacher",
    "edm_grid",
    "eight_gaussians",
    "frechet_distance",
    "from_x0_eps",
    "get_solver",
    "grid_gaussians",
    "logsnr_grid",
    "mode_coverage",
    "sample",
    "sliced_wasserstein",
    "straightness",
    "to_x0_eps",
    "toy2d",
    "toy2d_teacher",
    "train_diffusion",
    "train_flow_matching",
    "two_moons",
    "uniform_grid",
]
