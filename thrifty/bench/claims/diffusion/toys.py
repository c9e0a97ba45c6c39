"""The workload the diffusion claims share: the 2-D eight-Gaussians toy, rectified-flow teachers, seeded draws, SWD.

- 2-D eight Gaussians (modes on a circle of radius 2, std 0.1); quality is the sliced Wasserstein distance (SWD, 256
  projections) to fresh data samples. Judged seed ``s`` draws its evaluation noise from ``20_000 + s``, its reference
  data from ``30_000 + s`` and its SWD projections from ``10_000 + s``, so every arm of a claim is scored on the same
  draws and comparisons pair by seed; tuning seeds (1000, ...) give draws no judged seed shares.
- Teachers are velocity-predicting ``TimeMLP`` rectified flows trained by ``thrifty.diffusion.core.teachers`` (cached
  after the first use; tiny ones at smoke scale) or the mixture's exact denoiser.
- ``Substrate`` pairs a teacher with its noise and metric for the sampler claims: the 2-D toy (SWD) or 8x8 digits
  (classifier-feature Frechet distance to the digits).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from thrifty.diffusion.core.data import GaussianMixture, digits_flat, eight_gaussians
from thrifty.diffusion.core.denoiser import Denoiser, ModuleDenoiser
from thrifty.diffusion.core.metrics import digits_fd, sliced_wasserstein
from thrifty.diffusion.core.schedules import RectifiedFlowSchedule
from thrifty.diffusion.core.solvers import sample, uniform_grid
from thrifty.diffusion.core.teachers import TimeMLP, digits_teacher, toy2d_teacher, train_flow_matching
from thrifty.diffusion.distill import consistency_sample

__all__ = [
    "EVAL_SAMPLES",
    "SAMPLING_STEPS",
    "SMOKE_TEACHERS",
    "OneStepCurve",
    "Substrate",
    "cm_swd",
    "flow",
    "frozen",
    "noise",
    "ode_swd",
    "reference",
    "swd",
    "toy_teacher",
]

EVAL_SAMPLES = {"smoke": 256, "quick": 4000, "full": 10000}
SAMPLING_STEPS = (1, 2, 4, 8)
# smoke scale (tests) uses tiny teachers trained in about a second and cached under their own names
SMOKE_TEACHERS = {
    "2d": {"hidden": 32, "depth": 2, "steps": 200, "batch_size": 128, "lr": 3e-3},
    "digits": {"hidden": 64, "depth": 2, "steps": 200, "batch_size": 128, "lr": 3e-3},
}


def flow(hidden: int, depth: int, seed: int) -> ModuleDenoiser:
    """A fresh velocity-predicting ``TimeMLP`` 2-hidden x depth on the rectified-flow schedule (seeded init)."""
    torch.manual_seed(seed)
    return ModuleDenoiser(TimeMLP(2, hidden, depth), "velocity", RectifiedFlowSchedule())


def frozen(module: nn.Module) -> nn.Module:
    """A deep copy in eval mode with every parameter frozen."""
    return copy.deepcopy(module).eval().requires_grad_(False)


def toy_teacher(scale: str, seed: int) -> Denoiser:
    """The 1-rectified-flow teacher on the 2-D toy: the core's cached teacher (the same for every seed), or at smoke
    scale a tiny one trained inline on the seed."""
    if scale != "smoke":
        return toy2d_teacher("eight_gaussians")
    gm = eight_gaussians()
    teacher = flow(32, 2, seed)
    train_flow_matching(teacher.module, lambda n, g: gm.sample(n, g), 60, 256, 3e-3, seed=seed)
    return frozen(teacher)


def swd(x: Tensor, ref: Tensor, seed: int) -> float:
    """SWD (256 projections drawn from the seed) between samples and reference data."""
    return sliced_wasserstein(x, ref, 256, torch.Generator().manual_seed(10_000 + seed))


def noise(n: int, seed: int, dim: int = 2) -> Tensor:
    """The seed's evaluation noise (state at t = 1)."""
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(20_000 + seed))


def reference(gm: GaussianMixture, n: int, seed: int) -> Tensor:
    """The seed's fresh reference data."""
    return gm.sample(n, torch.Generator().manual_seed(30_000 + seed))


def _timed(run: Callable[[], Tensor]) -> tuple[Tensor, float]:
    start = time.perf_counter()
    out = run()
    return out, time.perf_counter() - start


@torch.no_grad()
def ode_swd(model: Denoiser, z: Tensor, ref: Tensor, seed: int) -> tuple[list[float], list[float]]:
    """SWD and seconds of Euler sampling at each of ``SAMPLING_STEPS``."""
    values, seconds = [], []
    for k in SAMPLING_STEPS:
        x, s = _timed(lambda k=k: sample(model, z, uniform_grid(k), "euler"))
        values.append(swd(x, ref, seed))
        seconds.append(s)
    return values, seconds


@torch.no_grad()
def cm_swd(
    student: Denoiser, z: Tensor, ref: Tensor, seed: int, score: Callable[[Tensor], float] | None = None
) -> tuple[list[float], list[float]]:
    """Quality (``score``, SWD to ``ref`` by default) and seconds of consistency sampling (gamma 1, noise drawn from
    the seed) at each of ``SAMPLING_STEPS``."""
    score = score or (lambda x: swd(x, ref, seed))
    values, seconds = [], []
    for k in SAMPLING_STEPS:
        gen = torch.Generator().manual_seed(40_000 + seed)
        x, s = _timed(lambda k=k, gen=gen: consistency_sample(student, z, k, gamma=1.0, generator=gen))
        values.append(score(x))
        seconds.append(s)
    return values, seconds


class OneStepCurve:
    """An ``on_step`` callback: advances the progress bar and records the student's one-step SWD every ``every``
    calls (``steps`` counts calls, so it spans the stages of a multi-stage distiller)."""

    def __init__(
        self, student: Denoiser, z: Tensor, ref: Tensor, seed: int, every: int, advance: Callable[[int], None]
    ) -> None:
        self.student, self.z, self.ref, self.seed, self.every, self.advance = student, z, ref, seed, every, advance
        self.calls = 0
        self.steps: list[float] = [0.0]
        self.values: list[float] = [self.swd()]

    def swd(self) -> float:
        with torch.no_grad():
            return swd(self.student.predict(self.z, 1.0).x0, self.ref, self.seed)

    def __call__(self, step: int, loss: float) -> None:
        self.calls += 1
        self.advance(1)
        if self.calls % self.every == 0:
            self.steps.append(float(self.calls))
            self.values.append(self.swd())


class Substrate:
    """A fixed teacher (the same for every seed) with its noise shape and its metric against reference data.

    ``"2d"``: the eight-Gaussians rectified flow, SWD to fresh mixture samples drawn from the seed. ``"digits"``: the
    8x8-digits rectified flow (64-d rows), classifier-feature FD to the 1,437 training digits.
    """

    def __init__(self, name: str, n_eval: int, scale: str = "quick") -> None:
        self.name, self.n_eval = name, n_eval
        config = SMOKE_TEACHERS[name] if scale == "smoke" else None
        if name == "2d":
            self.teacher, self.dim, self.kind = toy2d_teacher("eight_gaussians", config=config), 2, "points"
            self.mix = eight_gaussians()
        else:
            self.teacher, self.dim, self.kind = digits_teacher(config=config), 64, "images"
            self.reference = digits_flat("train")[0]
        self.metric_name = "SWD" if name == "2d" else "classifier-FD"

    def noise(self, n: int, gen: torch.Generator) -> Tensor:
        return torch.randn(n, self.dim, generator=gen)

    def score(self, samples: Tensor, seed: int) -> float:
        if self.name == "2d":
            gen = torch.Generator().manual_seed(10_000 + seed)
            return sliced_wasserstein(samples, self.mix.sample(len(samples), gen), 256, gen)
        return digits_fd(samples, self.reference)

    def show(self, samples: Tensor) -> Tensor:
        return samples if self.kind == "points" else samples.reshape(-1, 1, 8, 8)
