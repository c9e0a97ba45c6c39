"""Metrics for few-step generation on CPU-sized substrates.

- ``sliced_wasserstein(x, y, projections=256)``: SW2 between two point clouds (random unit directions, sorted
  projections; unequal sizes compared at common quantiles).
- ``mode_coverage(samples, means, radius)``: fraction of modes hit by at least ``min_share`` of their fair share of
  samples, and the fraction of samples within ``radius`` of a mode.
- ``frechet_distance(a, b)``: Frechet distance between Gaussian fits of two feature sets; ``digits_fd(samples,
  reference)``: the same on the penultimate features of a small digits classifier (``digits_classifier()``, trained
  once on scikit-learn's digits and cached under ``cache_dir()``).
- ``straightness(trajectory, grid)``: ``E int ||dx/dt - (x_end - x_start) / (t_end - t_start)||^2 dt /
  (t_start - t_end)`` from the iterates of a sampler (0 for a straight path; InstaFlow/Rectified Flow's S(Z)).
- ``CountingDenoiser``: wraps a denoiser and counts its evaluations (NFE); ``count_params``, ``count_macs`` (Linear
  and convolution layers, by forward hooks).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from thrifty.diffusion.core.cache import cache_dir
from thrifty.diffusion.core.denoiser import DenoiserWrapper, Prediction

__all__ = [
    "CountingDenoiser",
    "count_macs",
    "count_params",
    "digits_classifier",
    "digits_fd",
    "digits_features",
    "frechet_distance",
    "mode_coverage",
    "sliced_wasserstein",
    "straightness",
]


def sliced_wasserstein(x: Tensor, y: Tensor, projections: int = 256, generator: torch.Generator | None = None) -> float:
    """Sliced 2-Wasserstein distance ``sqrt(E_theta W2^2(theta.x, theta.y))`` between ``(N, D)`` and ``(M, D)`` sets."""
    x, y = x.reshape(len(x), -1).double(), y.reshape(len(y), -1).double()
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"point sets differ in dimension: {x.shape[1]} vs {y.shape[1]}")
    theta = torch.randn(x.shape[1], projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, py = (x @ theta).sort(0).values, (y @ theta).sort(0).values
    if len(px) != len(py):
        m = min(len(px), len(py))
        q = (torch.arange(m, dtype=torch.float64) + 0.5) / m
        px, py = torch.quantile(px, q, dim=0), torch.quantile(py, q, dim=0)
    return float(((px - py) ** 2).mean().sqrt())


def mode_coverage(samples: Tensor, means: Tensor, radius: float, min_share: float = 0.2) -> dict[str, float]:
    """``coverage``: fraction of modes holding at least ``min_share / K`` of the samples within ``radius``;
    ``in_mode``: fraction of samples within ``radius`` of their nearest mode."""
    d = torch.cdist(samples.float(), means.float())
    dist, nearest = d.min(1)
    inside = dist < radius
    counts = torch.bincount(nearest[inside], minlength=len(means)).float()
    covered = counts >= min_share * len(samples) / len(means)
    return {"coverage": float(covered.float().mean()), "in_mode": float(inside.float().mean())}


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """``|mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2)`` between Gaussian fits of ``a`` and ``b``."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    vals, vecs = torch.linalg.eigh(ca)
    sqrt_a = vecs @ torch.diag(vals.clamp_min(0).sqrt()) @ vecs.T
    cross = torch.linalg.eigvalsh(sqrt_a @ cb @ sqrt_a).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + ca.trace() + cb.trace() - 2 * cross)


class _DigitsClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(64, 128), nn.SiLU(), nn.Linear(128, 64), nn.SiLU())
        self.head = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x.reshape(len(x), -1)))


_CLASSIFIER: dict[str, _DigitsClassifier] = {}
_CLASSIFIER_FILE = "digits_classifier_v1.pt"


def digits_classifier(retrain: bool = False) -> nn.Module:
    """The digits feature classifier (MLP 64-128-64-10, inputs in [-1, 1]).

    Trained once (seed 0, Adam, light Gaussian-noise augmentation; about 96% validation accuracy) and cached as
    ``cache_dir()/digits_classifier_v1.pt``.
    """
    if not retrain and "model" in _CLASSIFIER:
        return _CLASSIFIER["model"]
    path = cache_dir() / _CLASSIFIER_FILE
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = _DigitsClassifier()
    if path.exists() and not retrain:
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        _train_classifier(model)
        tmp = path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        tmp.replace(path)
    model.eval().requires_grad_(False)
    _CLASSIFIER["model"] = model
    return model


@torch.enable_grad()
def _train_classifier(model: _DigitsClassifier) -> None:
    from thrifty.diffusion.core.data import digits_flat

    gen = torch.Generator().manual_seed(0)
    x, y = digits_flat("train")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in range(400):
        idx = torch.randint(len(x), (256,), generator=gen)
        xb = x[idx] + 0.1 * torch.randn(256, 64, generator=gen)
        loss = nn.functional.cross_entropy(model(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def digits_features(x: Tensor) -> Tensor:
    """Penultimate (64-d) classifier features of digits given as ``(N, 64)`` or ``(N, 1, 8, 8)`` in [-1, 1]."""
    with torch.no_grad():
        return digits_classifier().features(x.reshape(len(x), -1).float())


def digits_fd(samples: Tensor, reference: Tensor) -> float:
    """Classifier-feature Frechet distance between generated digits and reference digits (an FID substitute)."""
    return frechet_distance(digits_features(samples), digits_features(reference))


def straightness(trajectory: list[Tensor], grid: Tensor) -> float:
    """Mean over samples of ``sum_i dt_i |(x_i - x_{i+1}) / dt_i - (x_0 - x_K) / T|^2 / T`` (0 on straight paths)."""
    grid = torch.as_tensor(grid, dtype=torch.float64)
    xs = torch.stack([x.reshape(len(x), -1).double() for x in trajectory])
    if len(xs) != len(grid):
        raise ValueError(f"trajectory has {len(xs)} states but the grid {len(grid)} times")
    total = grid[0] - grid[-1]
    chord = (xs[0] - xs[-1]) / total
    dt = (grid[:-1] - grid[1:])[:, None, None]
    slopes = (xs[:-1] - xs[1:]) / dt
    return float(((slopes - chord) ** 2).sum(-1).mul(dt[:, :, 0]).sum(0).mean() / total)


class CountingDenoiser(DenoiserWrapper):
    """A denoiser that counts how many times it is evaluated (``nfe``; ``reset()`` zeroes it)."""

    def __init__(self, denoiser: nn.Module) -> None:
        super().__init__(denoiser)
        self.nfe = 0

    def reset(self) -> None:
        self.nfe = 0

    def forward(self, x: Tensor, t: Tensor | float, cond: Any = None) -> Tensor:
        self.nfe += 1
        return self.denoiser(x, t, cond)

    def predict(self, x: Tensor, t: Tensor | float, cond: Any = None) -> Prediction:
        self.nfe += 1
        return self.denoiser.predict(x, t, cond)


def count_params(module: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in module.parameters())


def count_macs(module: nn.Module, *inputs: Any, **kwargs: Any) -> int:
    """Multiply-accumulates of one forward call over ``nn.Linear`` and ``nn.Conv*`` layers (counted by hooks):
    ``out.numel() * in_features`` and ``out.numel() * in_channels / groups * prod(kernel)``."""
    total = 0

    def hook(layer: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal total
        if isinstance(layer, nn.Linear):
            total += out.numel() * layer.in_features
        else:
            kernel = 1
            for k in layer.kernel_size:
                kernel *= k
            total += out.numel() * (layer.in_channels // layer.groups) * kernel

    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d)
    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            module(*inputs, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return total
