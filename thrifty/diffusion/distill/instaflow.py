"""InstaFlow: reflow, then one-step distillation (Liu et al., arXiv 2309.06380; Rectified Flow, arXiv 2209.03003).

Rule (``gnobitab/RectifiedFlow:ImageGeneration/losses.py``, InstaFlow ``code/``), in thrifty's time (t = 1 noise):

1. **Pairs.** ``z ~ N(0, I)``, ``x0 = ODE_teacher(z)`` (the k-rectified flow's probability-flow ODE, t: 1 -> 0).
2. **Reflow** (k -> k+1 rectified flow). ``t ~ U(0, 1 - eps]``, ``x_t = (1 - t) x0 + t z``,
   ``L = || v_theta(x_t, t) - (z - x0) ||^2`` (mean over dimensions). The new flow's paths are straighter because
   it is trained on a deterministic coupling that no longer crosses.
3. **Distillation** (k = 1 step). ``L = d(z - v_theta(z, 1), x0)`` on the same kind of pairs, with ``d`` LPIPS in the
   paper (here :class:`~thrifty.diffusion.distill._losses.FeatureDistance`: L2 in a frozen feature space plus L2).

InstaFlow's headline is that step 3 works far better from the 2-rectified flow than from the 1-rectified flow,
because reflow straightened the coupling first. The student and teacher may be any
:class:`~thrifty.diffusion.core.denoiser.Denoiser`; the losses use its velocity (its schedule converts other
prediction types), so they are the RF losses exactly for a rectified-flow schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from thrifty.diffusion.core.denoiser import Denoiser, from_x0_eps
from thrifty.diffusion.core.schedules import as_time
from thrifty.diffusion.distill._core import Distiller, TrainLog, frozen_copy, generate_pairs, pair_batches
from thrifty.diffusion.distill._losses import FeatureDistance, mse_loss

__all__ = ["InstaFlow", "OneStepDistillation", "Pairs", "Reflow", "one_step_loss", "reflow_loss", "rf_times"]

RF_EPS = 1e-3  # the RectifiedFlow repositories' eps: t_theirs ~ U[eps, 1) with t_theirs = 0 noise


def rf_times(n: int, eps: float = RF_EPS, generator: torch.Generator | None = None) -> Tensor:
    """Reflow's training times in thrifty's convention: ``t = 1 - t_theirs`` with ``t_theirs ~ U[eps, 1)``, i.e.
    ``t`` in ``(0, 1 - eps]`` (the official range, which leaves out the pure-noise end)."""
    return (1 - eps) * (1 - torch.rand(n, generator=generator))


def reflow_loss(student: Denoiser, z: Tensor, x0: Tensor, t: Tensor, weight: Tensor | None = None) -> Tensor:
    """Rectified-flow loss on a coupling: ``|| v_theta(x_t, t) - v*(x0, z, t) ||^2`` with ``x_t = a x0 + s z``.

    ``v*`` is the path's velocity ``a'(t) x0 + s'(t) z`` (``z - x0`` for rectified flow), computed by the core's
    prediction conversion, so the loss is the flow-matching loss of whatever schedule the student uses.
    """
    t = as_time(t, x0)
    x_t = student.schedule.add_noise(x0, z, t)
    target = from_x0_eps(x0, z, "velocity", t, student.schedule)
    return mse_loss(student.predict(x_t, t).velocity, target, weight)


def one_step_loss(
    student: Denoiser, z: Tensor, x0: Tensor, distance: Callable[[Tensor, Tensor], Tensor], t_start: float = 1.0
) -> Tensor:
    """InstaFlow's k = 1 distillation loss ``d(x0_theta(z, t_start), x0)``: the student's one-step sample (for a
    flow, ``z - v_theta(z, 1)``) against the teacher's ODE endpoint."""
    return distance(student.predict(z, t_start).x0, x0)


class Reflow(Distiller):
    """Train ``student`` as the next rectified flow on ``(z, x0)`` pair batches (``t ~ U(0, 1 - eps]``).

    No teacher argument: the teacher is in the data, the pairs its ODE produced (``generate_pairs``)."""

    def __init__(
        self, student: Denoiser, *, eps: float = RF_EPS, generator: torch.Generator | None = None, **kw: Any
    ) -> None:
        super().__init__(student, **kw)
        self.eps, self.generator = eps, generator

    def loss(self, batch: tuple[Tensor, Tensor], step: int) -> Tensor:
        z, x0 = batch
        return reflow_loss(self.student, z, x0, rf_times(z.shape[0], self.eps, self.generator).to(z))


class OneStepDistillation(Distiller):
    """Distil pairs ``(z, x0)`` into a one-step student with ``d(x0_theta(z, 1), x0)`` (InstaFlow's k = 1).

    No teacher argument: the teacher is in the data, the pairs its ODE produced."""

    def __init__(
        self, student: Denoiser, *, distance: Callable[[Tensor, Tensor], Tensor] | None = None, **kw: Any
    ) -> None:
        super().__init__(student, **kw)
        self.distance = distance if distance is not None else FeatureDistance()

    def loss(self, batch: tuple[Tensor, Tensor], step: int) -> Tensor:
        z, x0 = batch
        return one_step_loss(self.student, z, x0, self.distance)


Pairs = int | tuple[Tensor, Tensor]  # a number of pairs to solve for, or the pairs (z, x0) themselves


class InstaFlow:
    """The InstaFlow pipeline on a user's teacher: reflow it into a 2-rectified flow, then distil to one step.

    ``teacher`` is the 1-rectified flow (any ``Denoiser``; frozen here). Each stage is a distiller with the shared
    ``fit(data, steps)`` (:class:`Reflow`, :class:`OneStepDistillation`) whose data are pair batches; the pipeline
    solves the pairs and makes the students, so its stages take ``pairs`` (a count, or ``(z, x0)`` tensors) and
    ``steps``: ``reflow(pairs, steps)`` trains a copy of the teacher (or ``student``) on teacher pairs and returns
    the 2-RF; ``distill(flow, pairs, steps)`` trains a copy of ``flow`` (or ``student``) for one-step generation on
    ``flow``'s pairs. ``run`` does both. SlimFlow's pipeline has the same two stages.

    Example::

        insta = InstaFlow(teacher, sample_shape=(2,))
        two_rf = insta.reflow(20000, steps=5000)
        one_step = insta.distill(two_rf, 20000, steps=5000)
        x = one_step.predict(torch.randn(16, 2), 1.0).x0
    """

    def __init__(
        self,
        teacher: Denoiser,
        *,
        sample_shape: tuple[int, ...] | None = None,
        ode_steps: int = 32,
        ode_solver: str = "heun",
        batch_size: int = 256,
        lr: float = 1e-3,
        distance: Callable[[Tensor, Tensor], Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.teacher = frozen_copy(teacher)
        self.sample_shape = sample_shape
        self.ode_steps, self.ode_solver = ode_steps, ode_solver
        self.batch_size, self.lr = batch_size, lr
        self.distance = distance if distance is not None else FeatureDistance()
        self.generator = generator

    def pairs(self, flow: Denoiser, num_pairs: int, shape: tuple[int, ...] | None = None) -> tuple[Tensor, Tensor]:
        """``num_pairs`` pairs ``(z, ODE_flow(z))``."""
        shape = shape or self.sample_shape
        if shape is None:
            raise ValueError("pass sample_shape (the shape of one sample) to InstaFlow or shape= here")
        z = torch.randn((num_pairs, *shape), generator=self.generator)
        return generate_pairs(flow, z, self.ode_steps, self.ode_solver)

    def _train(self, distiller: Distiller, flow: Denoiser, pairs: Pairs, steps: int, on_step) -> TrainLog:
        pairs = self.pairs(flow, pairs) if isinstance(pairs, int) else pairs
        return distiller.fit(pair_batches(*pairs, self.batch_size, self.generator), steps, on_step=on_step)

    def reflow(
        self,
        pairs: Pairs,
        steps: int,
        *,
        student: Denoiser | None = None,
        on_step: Callable[[int, float], None] | None = None,
    ) -> Denoiser:
        """Train the 2-rectified flow (initialised from the teacher unless ``student`` is given) on the teacher's
        ``pairs``."""
        flow = student if student is not None else frozen_copy(self.teacher).requires_grad_(True)
        self._train(Reflow(flow, lr=self.lr, generator=self.generator), self.teacher, pairs, steps, on_step)
        return flow

    def distill(
        self,
        flow: Denoiser,
        pairs: Pairs,
        steps: int,
        *,
        student: Denoiser | None = None,
        on_step: Callable[[int, float], None] | None = None,
    ) -> Denoiser:
        """One-step distillation of ``flow`` (initialised from ``flow`` unless ``student`` is given) on ``flow``'s
        ``pairs``."""
        one = student if student is not None else frozen_copy(flow).requires_grad_(True)
        self._train(OneStepDistillation(one, distance=self.distance, lr=self.lr), flow, pairs, steps, on_step)
        return one

    def run(
        self,
        num_pairs: int,
        reflow_steps: int,
        distill_steps: int,
        *,
        on_step: Callable[[int, float], None] | None = None,
    ) -> tuple[Denoiser, Denoiser]:
        """Reflow then distil, each stage on ``num_pairs`` pairs of its own teacher: returns ``(two_rf, one_step)``."""
        two_rf = self.reflow(num_pairs, reflow_steps, on_step=on_step)
        return two_rf, self.distill(two_rf, num_pairs, distill_steps, on_step=on_step)
