"""Hyper-SD: trajectory-segmented consistency distillation, TSCD (Ren et al., NeurIPS 2024, arXiv 2404.13686).

Rule: split the time axis [0, 1] into ``k`` equal segments; within a segment the consistency target is the
segment's *start* (its boundary nearest the data), so the student only has to be consistent along short pieces
of the teacher's trajectory. Train in stages ``k = 8 -> 4 -> 2 -> 1``, each stage initialised from the previous
one, with the consistency-distillation loss of :class:`~thrifty.diffusion.distill._core.ConsistencyDistillation`
(teacher DDIM step between adjacent grid times, EMA target network, MSE). The last stage (``k = 1``) is an
ordinary consistency model, sampled with TCD's ``gamma`` (``thrifty.diffusion.distill._core.TCDStep``).

Not reproduced: the adversarial term, the human-feedback reward stage and the final DMD one-step stage of the
paper (no training code was released; the paper's T2I reward models have no honest toy substitute here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from thrifty.diffusion.core.denoiser import Denoiser
from thrifty.diffusion.core.solvers import Solver
from thrifty.diffusion.distill._core import ConsistencyDistillation, TrainLog, batches_forever

__all__ = ["DEFAULT_STAGES", "HyperSD"]

DEFAULT_STAGES = (8, 4, 2, 1)


class HyperSD:
    """TSCD on a user's teacher: ``fit(data, steps)`` trains ``student`` through the segment stages in place.

    ``stages`` are the segment counts (each must divide ``num_timesteps``); the ``steps`` are split equally among
    them (the remainder goes to the last stage), so ``stages=(1,)`` is plain consistency distillation at the same
    budget. ``teacher_solver``/``sub_steps`` choose how the teacher moves between grid times (DDIM by default).

    Example::

        hyper = HyperSD(teacher, student)
        hyper.fit(loader, steps=4000)
        x = consistency_sample(student, torch.randn(16, 2), steps=2)
    """

    def __init__(
        self,
        teacher: Denoiser,
        student: Denoiser,
        *,
        stages: Sequence[int] = DEFAULT_STAGES,
        num_timesteps: int = 48,
        teacher_solver: str | Solver = "euler",
        sub_steps: int = 1,
        distance: Callable[[Tensor, Tensor], Tensor] | None = None,
        ema_decay: float = 0.95,
        lr: float = 1e-3,
        generator: torch.Generator | None = None,
    ) -> None:
        stages = tuple(int(k) for k in stages)
        if not stages or any(k < 1 or num_timesteps % k for k in stages):
            raise ValueError(f"every stage must be a positive divisor of num_timesteps={num_timesteps}, got {stages}")
        self.teacher, self.student, self.stages = teacher, student, stages
        self.options: dict[str, Any] = dict(
            num_timesteps=num_timesteps,
            teacher_solver=teacher_solver,
            sub_steps=sub_steps,
            distance=distance,
            ema_decay=ema_decay,
            lr=lr,
            generator=generator,
        )

    def stage_steps(self, steps: int) -> list[int]:
        """Optimizer steps per stage: equal shares, the remainder to the last stage."""
        share = steps // len(self.stages)
        return [share] * (len(self.stages) - 1) + [steps - share * (len(self.stages) - 1)]

    def fit(
        self,
        data: Iterable[Any],
        steps: int,
        *,
        on_step: Callable[[int, float], None] | None = None,
        on_stage: Callable[[int, Denoiser], None] | None = None,
    ) -> TrainLog:
        """Run every stage on ``data`` (a loader of ``x0`` batches); ``on_stage(k, student)`` after each stage. The
        log covers all ``steps``; ``log.stages`` holds each stage's own log."""
        stream = batches_forever(data)
        log = TrainLog()
        for k, k_steps in zip(self.stages, self.stage_steps(steps), strict=True):
            stage = ConsistencyDistillation(self.teacher, self.student, segments=k, **self.options)
            log.add_stage(stage.fit(stream, k_steps, on_step=on_step))
            if on_stage is not None:
                on_stage(k, self.student)
        return log
