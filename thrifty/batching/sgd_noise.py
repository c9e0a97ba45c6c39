"""Tools of the SGD-noise study: the alpha-trick model, the scaled hinge loss, training until every point is fitted,
critical temperatures and the power-law fit. (The (T, P) sweep and the phase-diagram plot are experiment code: they
live with the SGD-noise claim in the bench.)

Paper: "Dissecting the Effects of SGD Noise in Distinct Regimes of Deep Learning", Sclocchi, Geiger and Wyart,
ICML 2023, arXiv 2301.13703. An analysis paper; the protocol it measures with is:

    f(w, x) = alpha [F(w, x) - F(w_0, x)]             (F the network, w_0 a frozen copy of its initial weights)
    L(w) = (1 / alpha^2) mean_mu l(y_mu f(w, x_mu)),  l(z) = max(0, 1 - z)     (hinge; labels y = +-1)
    SGD with learning rate eta and batch B, temperature T = eta / B; stop when every training margin
    y_mu f(w, x_mu) >= 1 (the hinge loss is exactly zero), or at a step cap.

So ``f = 0`` at initialisation for any ``alpha``; ``alpha >> 1`` is the lazy (kernel) regime, where training follows
the model linearised around ``w_0``, and ``alpha << 1`` the feature-learning regime. The ``1 / alpha^2`` keeps the
time scale of the function's dynamics independent of ``alpha`` in the lazy limit. The paper finds that the
temperature ``T_c`` at which SGD noise starts changing the trained model is a power law of the training-set size
``P``; the authors' companion talk (APS March Meeting 2023, F02.3) writes it ``T_c ~ P^-a`` and relates ``a`` to the
power laws of the relative weight variation ``|w - w_0| / |w_0| ~ T^delta P^gamma`` (``a = gamma / delta``): noise
matters once the weights move far enough from their initialisation to leave the kernel regime.
:func:`critical_temperature` therefore reads ``T_c`` as the temperature at which an observable (by default that
relative weight variation) crosses a fixed level, interpolated on log-log axes. No official code was read.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "AlphaScaledModel",
    "FitResult",
    "all_fitted",
    "critical_temperature",
    "fit_power_law",
    "margins",
    "scaled_hinge_loss",
    "train_until_fitted",
]


class AlphaScaledModel(nn.Module):
    """``alpha * (F(w, x) - F(w_0, x))``: ``model`` is trained, a frozen copy of it at construction is ``w_0``."""

    def __init__(self, model: nn.Module, alpha: float):
        super().__init__()
        if not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        self.model = model
        self.initial = copy.deepcopy(model).requires_grad_(False)
        self.alpha = float(alpha)

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            reference = self.initial(x)
        return self.alpha * (self.model(x) - reference)

    def weight_variation(self) -> float:
        """``|w - w_0| / |w_0|`` over all trained parameters."""
        with torch.no_grad():
            pairs = list(zip(self.model.parameters(), self.initial.parameters(), strict=True))
            diff = sum(float((p - q).square().sum()) for p, q in pairs)
            norm = sum(float(q.square().sum()) for _, q in pairs)
        return math.sqrt(diff / norm)


def margins(output: Tensor, target: Tensor) -> Tensor:
    """``y f`` per example (``output`` of shape (n,) or (n, 1), ``target`` in {-1, +1})."""
    return output.reshape(-1) * target.reshape(-1).to(output.dtype)


def scaled_hinge_loss(output: Tensor, target: Tensor, alpha: float) -> Tensor:
    """``mean max(0, 1 - y f) / alpha^2`` with ``f`` the alpha-scaled output."""
    return torch.relu(1.0 - margins(output, target)).mean() / alpha**2


def all_fitted(output: Tensor, target: Tensor) -> bool:
    """The stopping rule: every margin ``y f >= 1`` (the hinge loss is exactly zero)."""
    return bool((margins(output, target) >= 1.0).all())


@dataclass
class FitResult:
    """One run of :func:`train_until_fitted`: whether it fitted every point, steps taken, ``eta * steps``
    (the training time), the relative weight variation, the test error (when test data was given) and the
    wall-clock seconds."""

    fitted: bool
    steps: int
    time: float
    weight_variation: float
    test_error: float = math.nan
    seconds: float = 0.0


def train_until_fitted(
    model: AlphaScaledModel,
    x: Tensor,
    y: Tensor,
    temperature: float,
    batch_size: int,
    max_steps: int,
    *,
    generator: torch.Generator | None = None,
    check_every: int | None = None,
    x_test: Tensor | None = None,
    y_test: Tensor | None = None,
) -> FitResult:
    """Plain SGD with ``lr = temperature * batch_size`` on :func:`scaled_hinge_loss` until :func:`all_fitted` holds
    on the whole training set (checked every ``check_every`` steps, default once per epoch) or ``max_steps``.

    Batches are drawn without replacement within an epoch (a new permutation each epoch). Labels are +-1.
    """
    if not temperature > 0 or batch_size < 1 or max_steps < 0:
        raise ValueError("temperature must be positive, batch_size >= 1 and max_steps >= 0")
    start = time.perf_counter()
    n = len(x)
    lr = temperature * batch_size
    check_every = check_every or max(1, n // batch_size)
    opt = torch.optim.SGD(model.model.parameters(), lr=lr)
    order = torch.randperm(n, generator=generator)
    cursor, steps = 0, 0

    def fitted_now() -> bool:
        with torch.no_grad():
            return all_fitted(model(x), y)

    fitted = fitted_now()
    while not fitted and steps < max_steps:
        if cursor + batch_size > n:
            order, cursor = torch.randperm(n, generator=generator), 0
        batch = order[cursor : cursor + batch_size]
        cursor += batch_size
        opt.zero_grad(set_to_none=True)
        scaled_hinge_loss(model(x[batch]), y[batch], model.alpha).backward()
        opt.step()
        steps += 1
        if steps % check_every == 0 or steps == max_steps:
            fitted = fitted_now()
    test_error = math.nan
    if x_test is not None and y_test is not None:
        with torch.no_grad():
            test_error = float((margins(model(x_test), y_test) <= 0).float().mean())
    return FitResult(fitted, steps, lr * steps, model.weight_variation(), test_error, time.perf_counter() - start)


def critical_temperature(temperatures: Sequence[float], values: Sequence[float], level: float) -> float:
    """The temperature at which ``values`` (increasing with ``T``) first reaches ``level``, interpolated linearly in
    ``log T`` and ``log value``; NaN when the grid never reaches it or starts above it."""
    if len(temperatures) != len(values) or len(values) < 2:
        raise ValueError("need matching temperatures and values, at least two")
    if not values[0] < level:
        return math.nan
    for k in range(1, len(values)):
        t0, v0, t1, v1 = temperatures[k - 1], values[k - 1], temperatures[k], values[k]
        if v1 >= level:
            if v0 <= 0 or v1 <= 0:
                return t1
            frac = (math.log(level) - math.log(v0)) / (math.log(v1) - math.log(v0))
            return math.exp(math.log(t0) + frac * (math.log(t1) - math.log(t0)))
    return math.nan


def fit_power_law(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """Least squares ``log y = log c + k log x``: returns ``(k, c, R^2)`` (finite positive points only)."""
    pts = [(math.log(a), math.log(b)) for a, b in zip(xs, ys, strict=True) if a > 0 and b > 0 and math.isfinite(b)]
    if len(pts) < 2:
        return math.nan, math.nan, math.nan
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    k = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
    c = my - k * mx
    ss_res = sum((p[1] - (c + k * p[0])) ** 2 for p in pts)
    ss_tot = sum((p[1] - my) ** 2 for p in pts)
    return k, math.exp(c), (1.0 - ss_res / ss_tot) if ss_tot > 0 else 1.0
