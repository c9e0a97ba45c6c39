"""Distil a teacher into a few-step student by name, and sample the student the way its method samples.

``distill(method, teacher, data, steps, sample_shape)`` trains a student with one of the five trajectory distillers on
a teacher (any ``Denoiser``) and a source of data samples; ``generate(method, student, noise, k)`` samples it in ``k``
steps (a flow student by Euler steps, consistency students by TCD's ``gamma = 1`` multistep sampling), as ``thrifty
diffusion distill`` does.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

from thrifty.diffusion.core.denoiser import Denoiser, ModuleDenoiser
from thrifty.diffusion.core.schedules import RectifiedFlowSchedule
from thrifty.diffusion.core.solvers import sample, uniform_grid
from thrifty.diffusion.core.teachers import TimeMLP
from thrifty.diffusion.distill._core import consistency_sample, frozen_copy
from thrifty.diffusion.distill.hyper_sd import HyperSD
from thrifty.diffusion.distill.improved_lct import ImprovedLCT
from thrifty.diffusion.distill.instaflow import InstaFlow
from thrifty.diffusion.distill.scott import SCott
from thrifty.diffusion.distill.slimflow import SlimFlow

__all__ = ["CONSISTENCY", "METHODS", "DataSource", "distill", "generate"]

METHODS = ("instaflow", "slimflow", "hyper_sd", "scott", "improved_lct")
CONSISTENCY = ("hyper_sd", "scott", "improved_lct")

DataSource = Callable[[int, torch.Generator], Tensor]


def _fresh_copy(module: nn.Module, seed: int) -> nn.Module:
    """A copy of ``module`` with every submodule's parameters re-initialised (``reset_parameters``)."""
    torch.manual_seed(seed)
    fresh = copy.deepcopy(module).train().requires_grad_(True)
    for sub in fresh.modules():
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
    return fresh


def _batches(data: DataSource, batch_size: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    while True:
        yield data(batch_size, gen)


def distill(
    method: str,
    teacher: Denoiser,
    data: DataSource,
    steps: int,
    sample_shape: tuple[int, ...],
    *,
    batch_size: int = 256,
    num_pairs: int = 4000,
    student_hidden: int = 64,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> Denoiser:
    """Train a few-step student of ``teacher`` with ``method`` for ``steps`` optimizer steps (per stage for the
    two-stage flow methods) and return it. ``data(n, generator)`` draws data samples (consistency methods noise them).

    instaflow: 2-RF from the teacher, then one-step distillation; slimflow: a small ``TimeMLP`` (``student_hidden``)
    by annealing reflow, then flow-guided distillation (flat data only); hyper_sd: TSCD 8-4-2-1 from the teacher's
    weights; scott: SDE-teacher consistency distillation from the teacher's weights; improved_lct: consistency
    training of a re-initialised copy of the teacher's network (the teacher only fixes the architecture).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    gen = torch.Generator().manual_seed(seed)
    if method == "instaflow":
        insta = InstaFlow(teacher, sample_shape=sample_shape, batch_size=batch_size, generator=gen)
        return frozen_copy(insta.run(num_pairs, steps, steps, on_step=on_step)[1])
    if method == "slimflow":
        if len(sample_shape) != 1:
            raise ValueError(f"slimflow's small TimeMLP student takes flat samples, got shape {sample_shape}")
        torch.manual_seed(seed)
        student = ModuleDenoiser(TimeMLP(sample_shape[0], student_hidden, 2), "velocity", RectifiedFlowSchedule())
        slim = SlimFlow(teacher, sample_shape=sample_shape, batch_size=batch_size, generator=gen)
        two_rf = frozen_copy(slim.reflow(num_pairs, steps, student=student, on_step=on_step))
        return frozen_copy(slim.distill(two_rf, num_pairs, steps, on_step=on_step))
    batches = _batches(data, batch_size, seed)
    if method == "improved_lct":
        student = _fresh_copy(teacher, seed)
        ImprovedLCT(student, total_steps=steps, s1=160, generator=gen).fit(batches, steps, on_step=on_step)
        return frozen_copy(student)
    student = frozen_copy(teacher).requires_grad_(True)
    if method == "hyper_sd":
        HyperSD(teacher, student, num_timesteps=16, generator=gen).fit(batches, steps, on_step=on_step)
    else:
        SCott(teacher, student, generator=gen).fit(batches, steps, on_step=on_step)
    return frozen_copy(student)


@torch.no_grad()
def generate(method: str, student: Denoiser, noise: Tensor, steps: int, seed: int = 0) -> Tensor:
    """Sample ``student`` of ``method`` in ``steps`` steps from ``noise``."""
    if method in CONSISTENCY:
        return consistency_sample(student, noise, steps, generator=torch.Generator().manual_seed(seed))
    return sample(student, noise, uniform_grid(steps), "euler")
