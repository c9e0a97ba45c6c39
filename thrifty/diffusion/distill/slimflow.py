"""SlimFlow: small one-step rectified flows (Zhu et al., ECCV 2024, arXiv 2407.12718).

Two changes to InstaFlow's reflow -> distil pipeline for a student much smaller than the teacher
(``yuanzhi-zhu/SlimFlow:reflow/reflow.py``), in thrifty's time (t = 1 noise):

1. **Annealing reflow.** A small student cannot start from the teacher's weights, and training it from scratch on
   the teacher's deterministic pairs is hard. So the pairs are loosened at first and tightened over training:
   ``z' = sqrt(1 - beta^2) z + beta xi`` with ``beta = 1 - min(1, k / warmup)`` (``exp`` / ``cos`` options), then the
   reflow loss on ``(z', x0)``: beta = 1 is plain flow matching on the teacher's samples, beta = 0 is reflow.
   The official code also flips the whole pair batch horizontally with probability 1/2 (``flip_dims``).
2. **Flow-guided distillation** into the one-step student ``G(z) = x0_theta(z, 1)``:
   ``L = d(G(z_p), x0_p) + d(G(z), x0_2RF(x_s, s))`` with ``x_s = (1 - s) sg[G(z)] + s z``, ``s ~ U[0.2, 0.8]`` and
   ``x0_2RF(x_s, s) = x_s - s v_2RF(x_s, s)`` (one Euler step of the 2-rectified flow from the student's own
   point on the path): the guide supervises the student on fresh noise, beyond the fixed pairs.

The baselines are the same student with ``warmup=None`` (plain reflow from scratch) and ``guidance_weight=0``
(plain distillation).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from thrifty.diffusion.core.denoiser import Denoiser
from thrifty.diffusion.distill._core import Distiller, TrainLog, frozen_copy, generate_pairs, pair_batches
from thrifty.diffusion.distill._losses import FeatureDistance, annealed_noise, annealing_beta
from thrifty.diffusion.distill.instaflow import RF_EPS, Pairs, one_step_loss, reflow_loss, rf_times

__all__ = ["AnnealingReflow", "FlowGuidedDistillation", "SlimFlow", "flow_guided_target"]

GUIDE_T_RANGE = (0.2, 0.8)  # the official t_ ~ U[0.2, 0.8] (symmetric, so the same in either time convention)


@torch.no_grad()
def flow_guided_target(student: Denoiser, guide: Denoiser, z: Tensor, s: Tensor) -> Tensor:
    """SlimFlow's guidance target: the guide's one-step endpoint from the student's own point at time ``s``.

    ``x_s = alpha(s) x0_G + sigma(s) z`` with ``x0_G`` the student's one-step sample from ``z`` (no gradient), then
    ``x0_guide(x_s, s)`` (for rectified flow, ``x_s - s v_guide(x_s, s)``).
    """
    x0_student = student.predict(z, 1.0).x0
    x_s = guide.schedule.add_noise(x0_student, z, s)
    return guide.predict(x_s, s).x0


class AnnealingReflow(Distiller):
    """Reflow of a (small, fresh) student on teacher pairs whose noise is re-randomised by an annealed ``beta``.

    ``warmup=None`` is plain reflow (beta = 0 from the start). ``flip_dims`` (e.g. ``(-1,)`` for images) flips the
    whole pair batch along those dimensions with probability 1/2, as the official ``h_flip``. No teacher argument:
    the teacher is in the data, the pairs its ODE produced.
    """

    def __init__(
        self,
        student: Denoiser,
        *,
        warmup: int | None,
        kind: str = "linear",
        flip_dims: tuple[int, ...] | None = None,
        eps: float = RF_EPS,
        generator: torch.Generator | None = None,
        **kw,
    ) -> None:
        super().__init__(student, **kw)
        if warmup is not None:
            annealing_beta(0, warmup, kind)  # validates warmup and kind
        self.warmup, self.kind, self.flip_dims, self.eps, self.generator = warmup, kind, flip_dims, eps, generator

    def beta(self, step: int) -> float:
        return 0.0 if self.warmup is None else annealing_beta(step, self.warmup, self.kind)

    def loss(self, batch: tuple[Tensor, Tensor], step: int) -> Tensor:
        z, x0 = batch
        z = annealed_noise(z, self.beta(step), self.generator)
        if self.flip_dims and float(torch.rand((), generator=self.generator)) < 0.5:
            z, x0 = z.flip(self.flip_dims), x0.flip(self.flip_dims)
        return reflow_loss(self.student, z, x0, rf_times(z.shape[0], self.eps, self.generator).to(z))


class FlowGuidedDistillation(Distiller):
    """One-step distillation with SlimFlow's flow guidance (``guidance_weight=0``: plain pair distillation).

    ``teacher`` is the guiding flow (SlimFlow's small 2-RF, frozen here); the pair batches are its ODE's pairs.
    """

    def __init__(
        self,
        teacher: Denoiser,
        student: Denoiser,
        *,
        distance: Callable[[Tensor, Tensor], Tensor] | None = None,
        guidance_weight: float = 1.0,
        t_range: tuple[float, float] = GUIDE_T_RANGE,
        generator: torch.Generator | None = None,
        **kw,
    ) -> None:
        super().__init__(student, **kw)
        if not 0.0 <= t_range[0] < t_range[1] <= 1.0:
            raise ValueError(f"t_range must satisfy 0 <= lo < hi <= 1, got {t_range}")
        self.teacher = frozen_copy(teacher)
        self.distance = distance if distance is not None else FeatureDistance()
        self.guidance_weight, self.t_range, self.generator = guidance_weight, t_range, generator

    def loss(self, batch: tuple[Tensor, Tensor], step: int) -> Tensor:
        z_pair, x0_pair = batch
        loss = one_step_loss(self.student, z_pair, x0_pair, self.distance)
        if self.guidance_weight:
            z = torch.randn(z_pair.shape, generator=self.generator).to(z_pair)
            lo, hi = self.t_range
            s = torch.rand(z.shape[0], generator=self.generator).to(z) * (hi - lo) + lo
            target = flow_guided_target(self.student, self.teacher, z, s)
            loss = loss + self.guidance_weight * self.distance(self.student.predict(z, 1.0).x0, target)
        return loss


class SlimFlow:
    """The SlimFlow pipeline: a large 1-rectified flow ``teacher`` -> a small 2-RF ``student`` -> a one-step model.

    The stages are InstaFlow's, with the same signatures: ``reflow(pairs, steps, student=...)`` trains ``student``
    (fresh weights, any size) on the teacher's pairs with annealed noise (:class:`AnnealingReflow`);
    ``distill(flow, pairs, steps)`` trains a copy of the small 2-RF for one step with flow guidance from it
    (:class:`FlowGuidedDistillation`). ``pairs`` is a count of pairs to solve for, or ``(z, x0)`` tensors.
    ``plain=True`` in either runs the baseline (no annealing, no guidance).
    """

    def __init__(
        self,
        teacher: Denoiser,
        *,
        sample_shape: tuple[int, ...],
        ode_steps: int = 32,
        ode_solver: str = "heun",
        batch_size: int = 256,
        lr: float = 1e-3,
        kind: str = "linear",
        distance: Callable[[Tensor, Tensor], Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.teacher = frozen_copy(teacher)
        self.sample_shape = sample_shape
        self.ode_steps, self.ode_solver = ode_steps, ode_solver
        self.batch_size, self.lr, self.kind = batch_size, lr, kind
        self.distance = distance if distance is not None else FeatureDistance()
        self.generator = generator

    def pairs(self, flow: Denoiser, num_pairs: int) -> tuple[Tensor, Tensor]:
        """``num_pairs`` pairs ``(z, ODE_flow(z))``."""
        z = torch.randn((num_pairs, *self.sample_shape), generator=self.generator)
        return generate_pairs(flow, z, self.ode_steps, self.ode_solver)

    def _train(self, distiller: Distiller, flow: Denoiser, pairs: Pairs, steps: int, on_step) -> TrainLog:
        pairs = self.pairs(flow, pairs) if isinstance(pairs, int) else pairs
        return distiller.fit(pair_batches(*pairs, self.batch_size, self.generator), steps, on_step=on_step)

    def reflow(
        self,
        pairs: Pairs,
        steps: int,
        *,
        student: Denoiser,
        warmup: int | None = None,
        plain: bool = False,
        on_step: Callable[[int, float], None] | None = None,
    ) -> Denoiser:
        """Train ``student`` in place into a 2-RF on the teacher's ``pairs`` (``warmup`` defaults to half the steps)."""
        warm = None if plain else (warmup if warmup is not None else max(1, steps // 2))
        trainer = AnnealingReflow(student, warmup=warm, kind=self.kind, lr=self.lr, generator=self.generator)
        self._train(trainer, self.teacher, pairs, steps, on_step)
        return student

    def distill(
        self,
        flow: Denoiser,
        pairs: Pairs,
        steps: int,
        *,
        plain: bool = False,
        on_step: Callable[[int, float], None] | None = None,
    ) -> Denoiser:
        """A one-step copy of the small 2-RF ``flow`` trained on ``flow``'s ``pairs`` (with flow guidance from
        ``flow`` unless ``plain``)."""
        one = frozen_copy(flow).requires_grad_(True)
        trainer = FlowGuidedDistillation(
            flow,
            one,
            distance=self.distance,
            guidance_weight=0.0 if plain else 1.0,
            lr=self.lr,
            generator=self.generator,
        )
        self._train(trainer, flow, pairs, steps, on_step)
        return one
