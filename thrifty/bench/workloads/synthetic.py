"""Closed-form objectives whose optimum is known: Rosenbrock's valley and the noisy quadratic model.

They cost microseconds per step, so they probe an optimizer's dynamics (ill-conditioning,
gradient noise, divergence) without any data. Starting points, curvatures and noise are drawn or
computed on the CPU whatever the ``device``, then moved there.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from thrifty.bench.workloads.base import Task

__all__ = ["Point", "make_noisy_quadratic", "make_rosenbrock"]


class Point(nn.Module):
    """A model that is just one parameter vector ``w``: the point an optimizer moves."""

    def __init__(self, init: Tensor):
        super().__init__()
        self.w = nn.Parameter(init.clone())


def _seeded_init(base: Tensor, init_noise: float, generator: torch.Generator) -> Tensor:
    if init_noise < 0:
        raise ValueError(f"init_noise must be in [0, inf), got {init_noise}")
    if not init_noise:
        return base
    return base + init_noise * torch.randn(base.shape, generator=generator)


def make_rosenbrock(
    seed: int = 0,
    *,
    a: float = 1.0,
    b: float = 100.0,
    init_noise: float = 0.0,
    device: str | torch.device = "cpu",
) -> Task:
    """``rosenbrock``: f(x, y) = (a - x)^2 + b (y - x^2)^2 from the classic start (-1.5, 2.0).

    The minimum is f = 0 at (a, a^2). The seed matters only through ``init_noise`` (the standard
    deviation of Gaussian noise added to the start); there is no data, so ``next_batch`` returns
    ``None``. Metrics: ``val_loss`` (f at the current point) and ``dist_to_opt``.
    """
    device = torch.device(device)
    start = _seeded_init(torch.tensor([-1.5, 2.0]), init_noise, torch.Generator().manual_seed(seed))
    optimum = torch.tensor([a, a * a]).to(device)

    def f(model: nn.Module, batch: None = None) -> Tensor:
        x, y = model.w[0], model.w[1]
        return (a - x) ** 2 + b * (y - x**2) ** 2

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict[str, float]:
        return {"val_loss": float(f(model)), "dist_to_opt": float((model.w - optimum).norm())}

    return Task(
        name="rosenbrock",
        model=Point(start).to(device),
        next_batch=lambda: None,
        loss=f,
        evaluate=evaluate,
        config={"seed": seed, "a": a, "b": b, "init_noise": init_noise, "device": str(device)},
    )


def make_noisy_quadratic(
    seed: int = 0,
    *,
    dim: int = 100,
    batch_size: int = 1,
    noise_scale: float = 1.0,
    init_noise: float = 0.0,
    device: str | torch.device = "cpu",
) -> Task:
    """``noisy_quadratic``: the noisy quadratic model (NQM) of Zhang et al. 2019.

    f(w) = 1/2 sum_i h_i w_i^2 with curvatures h_i log-spaced over [1e-2, 1], starting from
    w = 1 (plus ``init_noise`` Gaussian noise drawn from the seed). Each step draws a target
    c with c_i ~ N(0, noise_scale / (h_i * batch_size)) from the seed's stream and trains on
    1/2 sum_i h_i (w_i - c_i)^2, whose gradient H w - H c is the exact gradient plus noise with
    covariance ``noise_scale * H / batch_size``: the NQM's gradient noise, proportional to the
    curvature and shrinking with the batch size. The training loss therefore exceeds f by
    ``noise_scale * dim / (2 * batch_size)`` on average; ``val_loss`` is the exact, noise-free f.
    """
    if dim < 1:
        raise ValueError(f"dim must be in [1, inf), got {dim}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be in [1, inf), got {batch_size}")
    if noise_scale < 0:
        raise ValueError(f"noise_scale must be in [0, inf), got {noise_scale}")
    device = torch.device(device)
    h = torch.logspace(-2.0, 0.0, dim)
    target_std = (noise_scale / (h * batch_size)).sqrt().to(device)
    h = h.to(device)
    generator = torch.Generator().manual_seed(seed)
    data_generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
    model = Point(_seeded_init(torch.ones(dim), init_noise, generator)).to(device)

    def next_batch() -> Tensor:
        return target_std * torch.randn(dim, generator=data_generator).to(device, non_blocking=True)

    def loss(model: nn.Module, target: Tensor) -> Tensor:
        return 0.5 * (h * (model.w - target) ** 2).sum()

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict[str, float]:
        return {"val_loss": float(0.5 * (h * model.w**2).sum())}

    return Task(
        name="noisy_quadratic",
        model=model,
        next_batch=next_batch,
        loss=loss,
        evaluate=evaluate,
        config={
            "seed": seed,
            "dim": dim,
            "batch_size": batch_size,
            "noise_scale": noise_scale,
            "init_noise": init_noise,
            "device": str(device),
        },
    )
