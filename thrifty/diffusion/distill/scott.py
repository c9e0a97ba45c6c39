"""SCott: stochastic consistency distillation (Liu et al., arXiv 2403.01505).

Rule: LCM-style consistency distillation whose teacher moves between the grid times ``t_{n+1} -> t_n`` with a
*stochastic* solver (noise strength ``eta``, ``m`` sub-steps) instead of an ODE solver:
``x_hat_{t_n} = SDE_solver(teacher, x_{t_{n+1}} -> t_n; eta, m)``,
``L = d(f_theta(x_{t_{n+1}}, t_{n+1}), sg f_theta-(x_hat_{t_n}, t_n))``. The paper's argument: the SDE solver's
fresh noise corrects the teacher's errors along the way, so the distilled student inherits better samples; with an
exact teacher there is nothing to correct. The stochastic step is the core's DDIM-eta step
(``thrifty.diffusion.core.solvers.Stochastic``); the paper's exact solver and eta are unverified (no code released).

Not reproduced: the adversarial term with a LoRA'd discriminator, and text conditioning / CFG-augmented teachers
(a class condition can be passed to the denoisers, but the claim uses unconditional toys).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from thrifty.diffusion.core.denoiser import Denoiser
from thrifty.diffusion.core.solvers import Stochastic
from thrifty.diffusion.distill._core import ConsistencyDistillation

__all__ = ["SCott"]


class SCott(ConsistencyDistillation):
    """Consistency distillation with an SDE teacher: ``eta`` noise strength, ``sub_steps`` solver steps per interval.

    ``eta = 0`` is ordinary (ODE / DDIM-teacher) consistency distillation, the paper's baseline.

    Example::

        scott = SCott(teacher, student, eta=0.6)
        scott.fit(loader, steps=4000)
        x = consistency_sample(student, torch.randn(16, 2), steps=2)
    """

    def __init__(
        self,
        teacher: Denoiser,
        student: Denoiser,
        *,
        eta: float = 0.6,
        sub_steps: int = 4,
        num_timesteps: int = 16,
        distance: Callable[[Tensor, Tensor], Tensor] | None = None,
        ema_decay: float = 0.95,
        lr: float = 1e-3,
        generator: torch.Generator | None = None,
        **kw,
    ) -> None:
        super().__init__(
            teacher,
            student,
            segments=1,
            num_timesteps=num_timesteps,
            teacher_solver=Stochastic(eta=eta),
            sub_steps=sub_steps,
            distance=distance,
            ema_decay=ema_decay,
            lr=lr,
            generator=generator,
            **kw,
        )
        self.eta = eta
