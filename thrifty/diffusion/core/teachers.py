"""Small teachers trained by the project's own code, cached after the first use.

- ``TimeMLP(dim, hidden, depth)``: ``net(x, t) -> (B, dim)`` with a sinusoidal embedding of ``t`` (in [0, 1]); flat
  inputs ``(B, dim)``, or images flattened and restored (``image_shape``).
- ``train_diffusion(model, data, schedule, steps, prediction_type, ...)``: the denoising loss
  ``|model(a x0 + s eps, t) - target|^2`` with ``target`` the prediction of ``prediction_type`` made of ``(x0, eps)``,
  ``t ~ U(t_min, 1)``; Adam with cosine decay. ``data`` is an ``(N, ...)`` tensor (sampled with replacement) or a
  callable ``(n, generator) -> tensor``. ``train_flow_matching(model, data, steps, ...)``: the same with the
  rectified-flow schedule and the velocity target ``eps - x0`` (Liu et al. 2022; Lipman et al. 2022).
- ``toy2d_teacher(name)``, ``digits_teacher()``: velocity-predicting rectified-flow ``ModuleDenoiser`` teachers on a
  2-D toy (``thrifty.diffusion.core.data.TOY2D``) and on 8x8 digits in [-1, 1] (64-d flat), trained once with a
  progress bar and stored under ``cache_dir()``; later calls load them. ``retrain=True`` rebuilds.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from thrifty.diffusion.core.cache import cache_dir
from thrifty.diffusion.core.denoiser import ModuleDenoiser, from_x0_eps
from thrifty.diffusion.core.schedules import NoiseSchedule, RectifiedFlowSchedule, _expand

__all__ = [
    "TimeMLP",
    "digits_teacher",
    "toy2d_teacher",
    "train_diffusion",
    "train_flow_matching",
]

DataSource = Tensor | Callable[[int, torch.Generator], Tensor]
Progress = Callable[[int], None]


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding of ``1000 t`` (DDPM/diffusers' convention), ``(B,) -> (B, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = 1000 * t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], 1)


class TimeMLP(nn.Module):
    """Time-conditioned MLP: ``[x, emb(t)] -> hidden (SiLU) x depth -> dim``."""

    def __init__(
        self,
        dim: int,
        hidden: int = 256,
        depth: int = 3,
        time_dim: int = 64,
        image_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        self.dim, self.time_dim, self.image_shape = dim, time_dim, image_shape
        layers: list[nn.Module] = [nn.Linear(dim + time_dim, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        layers.append(nn.Linear(hidden, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        shape = x.shape
        t = t.expand(shape[0]) if t.dim() == 0 else t
        out = self.net(torch.cat([x.reshape(shape[0], -1), timestep_embedding(t, self.time_dim)], 1))
        return out.reshape(shape)


def _draw(data: DataSource, n: int, generator: torch.Generator) -> Tensor:
    if isinstance(data, Tensor):
        return data[torch.randint(len(data), (n,), generator=generator)]
    return data(n, generator)


@torch.enable_grad()
def train_diffusion(
    model: nn.Module,
    data: DataSource,
    schedule: NoiseSchedule,
    steps: int,
    prediction_type: str = "epsilon",
    batch_size: int = 256,
    lr: float = 1e-3,
    t_min: float = 0.0,
    seed: int = 0,
    progress: Progress | None = None,
) -> list[float]:
    """Train ``model(x_t, t)`` (``t`` in [0, 1]) to predict ``prediction_type``; returns the loss per step."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * i / max(steps, 1))))
    losses = []
    model.train()
    for _ in range(steps):
        x0 = _draw(data, batch_size, gen)
        eps = torch.randn(x0.shape, generator=gen)
        t = t_min + (1 - t_min) * torch.rand(batch_size, generator=gen)
        xt = _expand(schedule.alpha(t), x0) * x0 + _expand(schedule.sigma(t), x0) * eps
        target = from_x0_eps(x0, eps, prediction_type, t, schedule)
        loss = (model(xt, schedule.timestep(t)) - target).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(1)
    model.eval()
    return losses


def train_flow_matching(
    model: nn.Module,
    data: DataSource,
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    progress: Progress | None = None,
) -> list[float]:
    """Rectified-flow / flow-matching training: ``|model((1 - t) x0 + t eps, t) - (eps - x0)|^2``."""
    return train_diffusion(
        model, data, RectifiedFlowSchedule(), steps, "velocity", batch_size, lr, seed=seed, progress=progress
    )


def _cached(
    name: str, build: Callable[[], nn.Module], train: Callable[[nn.Module, Progress], None], steps: int, retrain: bool
) -> nn.Module:
    path = cache_dir() / f"{name}.pt"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build()
    if path.exists() and not retrain:
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        from rich.progress import Progress as RichProgress

        with RichProgress(transient=True) as bar, torch.enable_grad(), torch.random.fork_rng():
            task = bar.add_task(f"training teacher {name} (cached afterwards)", total=steps)
            train(model, lambda k: bar.advance(task, k))
        tmp = path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        tmp.replace(path)
    return model.eval().requires_grad_(False)


def _tag(cfg: dict[str, float]) -> str:
    """Cache tag of a teacher configuration."""
    return f"mlp{cfg['hidden']}x{cfg['depth']}_s{cfg['steps']}_b{cfg['batch_size']}_lr{cfg['lr']:g}"


TOY2D_TEACHER = {"hidden": 128, "depth": 3, "steps": 4000, "batch_size": 256, "lr": 2e-3}
DIGITS_TEACHER = {"hidden": 256, "depth": 3, "steps": 6000, "batch_size": 128, "lr": 1e-3}


def toy2d_teacher(
    name: str = "eight_gaussians", retrain: bool = False, config: dict[str, float] | None = None
) -> ModuleDenoiser:
    """A rectified-flow teacher (velocity, ``TimeMLP`` 2-128x3-2) on the 2-D toy ``name``; cached after training.

    ``config`` overrides keys of ``TOY2D_TEACHER`` (hidden, depth, steps, batch_size, lr); each configuration is
    cached under its own name (smoke-scale claims use a tiny one).
    """
    from thrifty.diffusion.core.data import TOY2D, toy2d

    if name not in TOY2D:
        raise ValueError(f"unknown 2-D toy {name!r}; expected one of {', '.join(TOY2D)}")
    cfg = {**TOY2D_TEACHER, **(config or {})}

    def train(model: nn.Module, progress: Progress) -> None:
        torch.manual_seed(0)
        train_flow_matching(
            model, lambda n, g: toy2d(name, n, g), cfg["steps"], cfg["batch_size"], cfg["lr"], progress=progress
        )

    def build() -> nn.Module:
        return TimeMLP(2, cfg["hidden"], cfg["depth"])

    net = _cached(f"rf_{name}_{_tag(cfg)}", build, train, cfg["steps"], retrain)
    return ModuleDenoiser(net, "velocity", RectifiedFlowSchedule())


def digits_teacher(retrain: bool = False, config: dict[str, float] | None = None) -> ModuleDenoiser:
    """A rectified-flow teacher (velocity, ``TimeMLP`` 64-256x3-64) on 8x8 digits as flat 64-d rows in [-1, 1].

    ``config`` overrides keys of ``DIGITS_TEACHER``; each configuration is cached under its own name.
    """
    from thrifty.diffusion.core.data import digits_flat

    cfg = {**DIGITS_TEACHER, **(config or {})}
    x, _ = digits_flat("train")

    def train(model: nn.Module, progress: Progress) -> None:
        torch.manual_seed(0)
        train_flow_matching(model, x, cfg["steps"], cfg["batch_size"], cfg["lr"], progress=progress)

    def build() -> nn.Module:
        return TimeMLP(64, cfg["hidden"], cfg["depth"])

    net = _cached(f"rf_digits_{_tag(cfg)}", build, train, cfg["steps"], retrain)
    return ModuleDenoiser(net, "velocity", RectifiedFlowSchedule())
