"""The training-loop machinery every trajectory distiller shares.

A distiller owns a *student* (a :class:`~thrifty.diffusion.core.denoiser.Denoiser`, so any ``nn.Module`` or diffusers
UNet through the core's adapters), an optimizer over the student's parameters, and a ``loss(batch, step)``; the
loop here feeds it batches from a data loader (tensors, or tuples whose first element is the tensor), steps the
optimizer with gradient clipping, and records the loss. Teachers are frozen copies; consistency methods keep a
target network updated by an exponential moving average.

One convention for every distiller: the teacher first, then the student, then keyword-only options, as in "distil
the teacher into the student" (``SCott(teacher, student, *, eta=...)``; those without a teacher module take the
student alone: consistency training, and the reflow stages whose teacher is in their pair data); and
``fit(data, steps, *, on_step=None) -> TrainLog`` with ``data`` a loader or iterator of training batches (cycled
when it runs out) and ``steps`` the number of optimizer steps. The two-stage pipelines (``InstaFlow``,
``SlimFlow``) solve their stages' pairs themselves, so their stages take ``(pairs, steps)`` with ``pairs`` a count
or the pair tensors, and return the trained model.

Also here: teacher pair generation for reflow (``generate_pairs``), TCD's multistep consistency sampling step
(``TCDStep``, ``consistency_sample``) and consistency distillation with trajectory segments
(``ConsistencyDistillation``, shared by Hyper-SD and SCott).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from thrifty.diffusion.core.denoiser import Denoiser
from thrifty.diffusion.core.schedules import _expand, as_time
from thrifty.diffusion.core.solvers import Euler, Solver, Stochastic, get_solver, sample, uniform_grid
from thrifty.diffusion.distill._losses import mse_loss, segment_start

__all__ = [
    "ConsistencyDistillation",
    "Distiller",
    "TCDStep",
    "consistency_sample",
    "TrainLog",
    "batches_forever",
    "ema_update",
    "frozen_copy",
    "generate_pairs",
    "pair_batches",
]


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy in eval mode with every parameter frozen (teachers and target networks)."""
    return copy.deepcopy(module).eval().requires_grad_(False)


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, decay: float) -> None:
    """``target <- decay * target + (1 - decay) * source``, parameter by parameter (buffers copied)."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must lie in [0, 1], got {decay}")
    for p_t, p_s in zip(target.parameters(), source.parameters(), strict=True):
        p_t.lerp_(p_s.detach(), 1.0 - decay)
    for b_t, b_s in zip(target.buffers(), source.buffers(), strict=True):
        b_t.copy_(b_s)


def batches_forever(data: Iterable[Any]) -> Iterator[Tensor]:
    """Cycle a data loader (or any re-iterable of batches) forever; a batch may be a tensor or a tuple/list whose
    first element is the tensor (as ``TensorDataset`` loaders yield)."""
    while True:
        empty = True
        for batch in data:
            empty = False
            yield batch[0] if isinstance(batch, (tuple, list)) else batch
        if empty:
            raise ValueError("the data loader yielded no batches")


@torch.no_grad()
def generate_pairs(
    teacher: Denoiser,
    noise: Tensor,
    steps: int = 32,
    solver: str | Solver = "heun",
    batch_size: int = 4096,
    cond: Any = None,
) -> tuple[Tensor, Tensor]:
    """Reflow's coupling: ``(z, ODE_teacher(z))`` for every noise row, solved on a uniform ``steps`` grid.

    InstaFlow / RectifiedFlow solve the teacher's probability-flow ODE from noise (t = 1) to data (t = 0); the pair
    ``(z, x0)`` then defines the straight path the next flow is trained on.
    """
    grid = uniform_grid(steps)
    outs = [sample(teacher, chunk, grid, solver, cond=cond) for chunk in noise.split(batch_size)]
    return noise, torch.cat(outs)


def pair_batches(noise: Tensor, x0: Tensor, batch_size: int, generator: torch.Generator | None = None):
    """An endless stream of shuffled ``(z, x0)`` minibatches from a fixed set of pairs."""
    if noise.shape != x0.shape:
        raise ValueError(f"pairs must have equal shapes, got {tuple(noise.shape)} and {tuple(x0.shape)}")
    n = noise.shape[0]
    while True:
        order = torch.randperm(n, generator=generator)
        for i in range(0, n - batch_size + 1, batch_size):
            idx = order[i : i + batch_size]
            yield noise[idx], x0[idx]


@dataclass
class TrainLog:
    """Losses and wall-clock seconds (since the start of ``fit``) of every optimizer step of one ``fit``; a fit in
    stages (Hyper-SD's segment stages) also keeps each stage's own log in ``stages``, in order."""

    losses: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    stages: list[TrainLog] = field(default_factory=list)

    def add_stage(self, log: TrainLog) -> None:
        """Append a stage's steps (its clock continued from this log's last step) and keep its own log."""
        offset = self.seconds[-1] if self.seconds else 0.0
        self.losses.extend(log.losses)
        self.seconds.extend(offset + s for s in log.seconds)
        self.stages.append(log)


class Distiller:
    """Base class: ``loss(batch, step) -> Tensor`` on the student; ``train_step`` and ``fit`` run the optimizer.

    ``student`` is a ``Denoiser`` (its parameters are trained); the optimizer is Adam(``lr``, ``betas``) unless one is
    given; ``grad_clip`` (global norm, ``None`` for none) follows the RectifiedFlow repositories' default of 1.
    Subclasses with a teacher take it first: ``Subclass(teacher, student, *, ...)``.
    """

    def __init__(
        self,
        student: Denoiser,
        *,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        grad_clip: float | None = 1.0,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        if not isinstance(student, Denoiser):
            raise TypeError(
                f"student must be a thrifty.diffusion.core Denoiser (wrap an nn.Module with ModuleDenoiser), "
                f"got {type(student).__name__}"
            )
        self.student = student
        params = [p for p in student.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the student has no trainable parameters")
        self.optimizer = optimizer if optimizer is not None else torch.optim.Adam(params, lr=lr, betas=betas)
        self.grad_clip = grad_clip
        self.step_count = 0

    def loss(self, batch: Any, step: int) -> Tensor:
        raise NotImplementedError

    def after_step(self) -> None:
        """Hook run after each optimizer step (target-network EMA updates)."""

    def train_step(self, batch: Any) -> float:
        """One optimizer step on ``batch``; returns the loss before the step."""
        self.student.train()
        loss = self.loss(batch, self.step_count)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {float(loss)} at step {self.step_count}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.student.parameters(), self.grad_clip)
        self.optimizer.step()
        self.after_step()
        self.step_count += 1
        return float(loss.detach())

    def fit(self, data: Iterable[Any], steps: int, *, on_step: Callable[[int, float], None] | None = None) -> TrainLog:
        """``steps`` optimizer steps on batches of ``data`` (a loader, cycled when it runs out, or an iterator);
        ``on_step(step, loss)`` after each."""
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        log = TrainLog()
        stream = batches_forever(data) if not isinstance(data, Iterator) else data
        start = time.perf_counter()
        for _ in range(steps):
            value = self.train_step(next(stream))
            log.losses.append(value)
            log.seconds.append(time.perf_counter() - start)
            if on_step is not None:
                on_step(self.step_count, value)
        self.student.eval()
        return log


_DDIM = Euler()  # stateless: the DDIM jump x' = alpha(s) x0 + sigma(s) eps of a prediction, one time per sample


class TCDStep(Solver):
    """A consistency model's multistep sampling step with TCD's ``gamma`` (Zheng et al. 2024; Hyper-SD's sampler).

    From the prediction ``(x0, eps)`` at ``t``: DDIM to ``s = (1 - gamma) t_next``, then forward-noise from ``s`` to
    ``t_next`` with fresh noise: ``x' = (a' / a_s) x_s + sqrt(s'^2 - (a' s_s / a_s)^2) z``. ``gamma = 1`` is the
    consistency-model sampler (``x' = a' x0 + s' z``), ``gamma = 0`` deterministic DDIM (the core's ``Euler``).
    """

    stochastic = True

    def __init__(self, gamma: float = 1.0) -> None:
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
        self.gamma = gamma

    def step(self, denoiser, x, t, t_next, cond=None, generator=None):
        sch = denoiser.schedule
        s = as_time(t_next, x) * (1.0 - self.gamma)
        x_s = _DDIM.step(denoiser, x, t, s, cond)
        if self.gamma == 0.0 or float(as_time(t_next).max()) <= 0.0:
            return x_s
        a_n, s_n = _expand(sch.alpha(as_time(t_next, x)), x), _expand(sch.sigma(as_time(t_next, x)), x)
        a_s, s_s = _expand(sch.alpha(s), x), _expand(sch.sigma(s), x)
        ratio = a_n / a_s.clamp_min(1e-20)
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return ratio * x_s + (s_n * s_n - (ratio * s_s) ** 2).clamp_min(0).sqrt() * z


@torch.no_grad()
def consistency_sample(
    student: Denoiser,
    noise: Tensor,
    steps: int,
    gamma: float = 1.0,
    segments: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``steps``-step sampling of a consistency student on the uniform grid ``1, (K-1)/K, ..., 0``.

    With ``segments = steps`` (a Hyper-SD stage-k model at its own k) the grid points are its segment boundaries and
    ``gamma = 0`` follows its trajectory segments deterministically; otherwise ``gamma`` is TCD's stochasticity.
    """
    if segments is not None and segments != steps:
        raise ValueError(f"segment-boundary sampling needs steps == segments, got {steps} and {segments}")
    return sample(student, noise, uniform_grid(steps), TCDStep(gamma), generator=generator)


class ConsistencyDistillation(Distiller):
    """Consistency distillation with trajectory segments and any teacher solver (Hyper-SD's TSCD, SCott, LCM).

    Per batch of data ``x0``: ``n ~ U{1..N}`` per sample, ``t = n / N``, ``x_t = alpha x0 + sigma eps``; the segment
    start ``s = floor-boundary(t, k)``; the teacher moves ``x_t -> x'`` at ``t' = t - 1/N`` with ``sub_steps`` steps
    of ``teacher_solver`` (``Euler`` = DDIM, LCM / Hyper-SD; ``Stochastic(eta)`` = SCott); the target is
    ``f_target(x', t' -> s)`` (``x'`` itself when ``t' = s``, the boundary condition), and the loss is
    ``d(f_theta(x_t, t -> s), sg[target])``. ``f(x, t -> s)`` is the DDIM jump of the network's prediction (exact
    inversion, so ``f(x, s -> s) = x``: the boundary condition holds by construction), so
    ``k = 1`` (``s = 0``) is plain consistency distillation onto ``x0``. The target network is an EMA of the student
    (``ema_decay``; LCM uses 0.95). ``N`` must be a multiple of ``k`` so segment boundaries lie on the grid.
    """

    def __init__(
        self,
        teacher: Denoiser,
        student: Denoiser,
        *,
        segments: int = 1,
        num_timesteps: int = 48,
        teacher_solver: str | Solver = "euler",
        sub_steps: int = 1,
        distance: Callable[[Tensor, Tensor], Tensor] | None = None,
        ema_decay: float = 0.95,
        target: nn.Module | None = None,
        generator: torch.Generator | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(student, **kw)
        if segments < 1 or num_timesteps % segments:
            raise ValueError(f"num_timesteps ({num_timesteps}) must be a positive multiple of segments ({segments})")
        if sub_steps < 1:
            raise ValueError(f"sub_steps must be >= 1, got {sub_steps}")
        self.teacher = frozen_copy(teacher)
        self.target = target if target is not None else frozen_copy(student)
        self.segments, self.num_timesteps, self.sub_steps = segments, num_timesteps, sub_steps
        self.solver = get_solver(teacher_solver)
        if not isinstance(self.solver, (Euler, Stochastic)) or getattr(self.solver, "churn", 0.0):
            raise ValueError(
                "the teacher solver must take one time per sample: Euler/DDIM or Stochastic(eta) without churn, "
                f"got {type(self.solver).__name__}"
            )
        self.distance = distance if distance is not None else mse_loss
        self.ema_decay, self.generator = ema_decay, generator

    @torch.no_grad()
    def teacher_move(self, x: Tensor, t: Tensor, t_next: Tensor) -> Tensor:
        """The teacher's solution from ``t`` to ``t_next`` (one pair per sample) in ``sub_steps`` equal solver steps."""
        for j in range(self.sub_steps):
            a = t + (t_next - t) * (j / self.sub_steps)
            b = t + (t_next - t) * ((j + 1) / self.sub_steps)
            x = self.solver.step(self.teacher, x, a, b, generator=self.generator)
        return x

    def targets(self, x0: Tensor, eps: Tensor, n: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(x_t, t, s, target)`` for grid indices ``n`` (exposed for tests)."""
        t = n.to(x0.dtype) / self.num_timesteps
        t_prev = (n - 1).to(x0.dtype) / self.num_timesteps
        s = segment_start(t, self.segments)
        x_t = self.student.schedule.add_noise(x0, eps, t)
        x_prev = self.teacher_move(x_t, t, t_prev)
        with torch.no_grad():
            jumped = _DDIM.step(self.target, x_prev, t_prev, s)
        at_boundary = ((t_prev - s).abs() < 0.5 / self.num_timesteps).reshape(-1, *([1] * (x0.dim() - 1)))
        return x_t, t, s, torch.where(at_boundary, x_prev, jumped)

    def loss(self, batch: Tensor, step: int) -> Tensor:
        eps = torch.randn(batch.shape, generator=self.generator).to(batch)
        n = torch.randint(1, self.num_timesteps + 1, (batch.shape[0],), generator=self.generator)
        x_t, t, s, target = self.targets(batch, eps, n)
        return self.distance(_DDIM.step(self.student, x_t, t, s), target)

    def after_step(self) -> None:
        ema_update(self.target, self.student, self.ema_decay)
