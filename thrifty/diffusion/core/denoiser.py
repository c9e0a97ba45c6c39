"""Denoisers: a network's output at ``(x_t, t)`` as one of four predictions, convertible into each other.

With ``x_t = alpha x0 + sigma eps`` (``thrifty.diffusion.core.schedules``, t = 1 is noise), the prediction types are

- ``"epsilon"``: the noise ``eps``;
- ``"x0"``: the clean sample ``x0`` (diffusers' ``"sample"``);
- ``"v"``: ``v = alpha eps - sigma x0`` (Salimans & Ho; diffusers' ``"v_prediction"``);
- ``"velocity"``: the probability-flow velocity ``dx_t/dt = alpha' x0 + sigma' eps``; for rectified flow
  ``eps - x0`` (diffusers' FlowMatch / SD3 convention; the RectifiedFlow repositories predict ``x0 - eps`` in their
  reversed time, i.e. the same field with the opposite sign).

``to_x0_eps(pred, kind, x, t, schedule) -> (x0, eps)`` and ``from_x0_eps(x0, eps, kind, t, schedule)`` are pure
functions; ``convert(...)`` chains them. A ``Denoiser`` is an ``nn.Module`` with ``prediction_type``, ``schedule`` and
``forward(x, t, cond=None) -> prediction`` (``t`` a scalar or a ``(B,)`` tensor in [0, 1]); ``predict(x, t, cond)``
returns a ``Prediction`` holding ``x0`` and ``eps`` with ``.velocity``/``.v``/``.as_type(kind)``.

Adapters: ``ModuleDenoiser`` (any ``nn.Module(x, timestep[, cond])``), ``DiffusersDenoiser`` (``UNet2DModel`` /
``UNet2DConditionModel``, prediction type from the argument, the scheduler config or ``model.config``; a clear
``ValueError`` when none says it), ``GaussianMixtureDenoiser`` (exact posterior mean of a diagonal Gaussian mixture),
``GaussianDenoiser`` (exact posterior mean of one full-covariance Gaussian, e.g. a stationary random field).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from thrifty.diffusion.core.schedules import (
    NoiseSchedule,
    RectifiedFlowSchedule,
    VPSchedule,
    _expand,
    as_time,
)

__all__ = [
    "PREDICTION_TYPES",
    "Denoiser",
    "DenoiserWrapper",
    "DiffusersDenoiser",
    "GaussianDenoiser",
    "GaussianMixtureDenoiser",
    "ModuleDenoiser",
    "Prediction",
    "check_prediction_type",
    "convert",
    "from_x0_eps",
    "schedule_from_scheduler_config",
    "to_x0_eps",
]

PREDICTION_TYPES = ("epsilon", "x0", "v", "velocity")
_DIFFUSERS_NAMES = {"epsilon": "epsilon", "sample": "x0", "v_prediction": "v", "flow_prediction": "velocity"}
_EPS = 1e-12


def check_prediction_type(kind: str) -> str:
    """``kind`` if it is one of ``PREDICTION_TYPES`` (diffusers names accepted), else a ``ValueError``."""
    kind = _DIFFUSERS_NAMES.get(kind, kind)
    if kind not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction type {kind!r}; expected one of {', '.join(PREDICTION_TYPES)}")
    return kind


def _coefficients(t: Tensor, x: Tensor, schedule: NoiseSchedule) -> tuple[Tensor, Tensor]:
    t = as_time(t, x)
    return _expand(schedule.alpha(t), x), _expand(schedule.sigma(t), x)


def to_x0_eps(pred: Tensor, kind: str, x: Tensor, t: Tensor | float, schedule: NoiseSchedule) -> tuple[Tensor, Tensor]:
    """``(x0, eps)`` implied by a prediction of type ``kind`` at ``(x, t)`` (exact inversion of x = a x0 + s eps)."""
    kind = check_prediction_type(kind)
    a, s = _coefficients(t, x, schedule)
    if kind == "epsilon":
        return (x - s * pred) / a.clamp_min(_EPS), pred
    if kind == "x0":
        return pred, (x - a * pred) / s.clamp_min(_EPS)
    if kind == "v":
        norm = a * a + s * s
        return (a * x - s * pred) / norm, (s * x + a * pred) / norm
    da, ds = schedule.derivatives(as_time(t, x))
    da, ds = _expand(da, x), _expand(ds, x)
    det = a * ds - s * da  # [[a, s], [a', s']] (x0, eps) = (x, u)
    return (ds * x - s * pred) / det, (a * pred - da * x) / det


def from_x0_eps(x0: Tensor, eps: Tensor, kind: str, t: Tensor | float, schedule: NoiseSchedule) -> Tensor:
    """The prediction of type ``kind`` made of ``(x0, eps)`` at time ``t``."""
    kind = check_prediction_type(kind)
    if kind == "epsilon":
        return eps
    if kind == "x0":
        return x0
    a, s = _coefficients(t, x0, schedule)
    if kind == "v":
        return a * eps - s * x0
    da, ds = schedule.derivatives(as_time(t, x0))
    return _expand(da, x0) * x0 + _expand(ds, x0) * eps


def convert(pred: Tensor, source: str, target: str, x: Tensor, t: Tensor | float, schedule: NoiseSchedule) -> Tensor:
    """Convert a prediction between any two of ``PREDICTION_TYPES``."""
    if check_prediction_type(source) == check_prediction_type(target):
        return pred
    x0, eps = to_x0_eps(pred, source, x, t, schedule)
    return from_x0_eps(x0, eps, target, t, schedule)


@dataclass
class Prediction:
    """A denoiser output in canonical form: the implied clean sample ``x0`` and noise ``eps`` at time ``t``."""

    x0: Tensor
    eps: Tensor
    t: Tensor
    schedule: NoiseSchedule

    def as_type(self, kind: str) -> Tensor:
        return from_x0_eps(self.x0, self.eps, kind, self.t, self.schedule)

    @property
    def velocity(self) -> Tensor:
        return self.as_type("velocity")

    @property
    def v(self) -> Tensor:
        return self.as_type("v")


class Denoiser(nn.Module):
    """Base class: ``forward(x, t, cond=None)`` returns a prediction of type ``self.prediction_type``.

    ``t`` is a float, a 0-d tensor or a ``(B,)`` tensor in [0, 1] of the schedule's convention (t = 1 is noise).
    """

    prediction_type: str
    schedule: NoiseSchedule

    def __init__(self, schedule: NoiseSchedule, prediction_type: str) -> None:
        super().__init__()
        self.schedule = schedule
        self.prediction_type = check_prediction_type(prediction_type)

    def forward(self, x: Tensor, t: Tensor | float, cond: Any = None) -> Tensor:
        raise NotImplementedError

    def predict(self, x: Tensor, t: Tensor | float, cond: Any = None) -> Prediction:
        """Run the network once and return ``(x0, eps)`` in a ``Prediction``."""
        t = as_time(t, x)
        x0, eps = to_x0_eps(self(x, t, cond), self.prediction_type, x, t, self.schedule)
        return Prediction(x0, eps, t, self.schedule)


def _batch_time(t: Tensor | float, x: Tensor) -> Tensor:
    t = as_time(t, x)
    return t.expand(x.shape[0]) if t.dim() == 0 else t


class DenoiserWrapper(nn.Module):
    """Base of wrappers around a denoiser (counting calls, skipping blocks, tiling, guidance) whose ``forward``
    returns predictions in the wrapped denoiser's schedule and prediction type."""

    def __init__(self, denoiser: nn.Module) -> None:
        super().__init__()
        self.denoiser = denoiser

    predict = Denoiser.predict  # converts this wrapper's own forward output

    @property
    def schedule(self) -> NoiseSchedule:
        return self.denoiser.schedule

    @property
    def prediction_type(self) -> str:
        return self.denoiser.prediction_type


class ModuleDenoiser(Denoiser):
    """Wrap ``module(x, timestep)`` or ``module(x, timestep, cond)`` that predicts ``prediction_type``.

    The module receives ``timestep = time_scale * schedule.timestep(t)`` as a ``(B,)`` tensor; with
    ``reverse_time=True`` it receives ``time_scale * (1 - t)`` and a velocity output is negated (the RectifiedFlow /
    BOSS / SlimFlow repositories' convention, where t = 0 is noise and the model predicts ``x0 - eps``).
    """

    def __init__(
        self,
        module: nn.Module,
        prediction_type: str,
        schedule: NoiseSchedule | None = None,
        time_scale: float = 1.0,
        reverse_time: bool = False,
    ) -> None:
        super().__init__(schedule if schedule is not None else RectifiedFlowSchedule(), prediction_type)
        self.module = module
        self.time_scale = time_scale
        self.reverse_time = reverse_time

    def forward(self, x: Tensor, t: Tensor | float, cond: Any = None) -> Tensor:
        t = _batch_time(t, x)
        model_t = (1 - t) if self.reverse_time else self.schedule.timestep(t)
        out = (
            self.module(x, model_t * self.time_scale)
            if cond is None
            else self.module(x, model_t * self.time_scale, cond)
        )
        return -out if self.reverse_time and self.prediction_type == "velocity" else out


def schedule_from_scheduler_config(config: Mapping[str, Any]) -> NoiseSchedule:
    """The ``NoiseSchedule`` a diffusers scheduler config describes (FlowMatch -> rectified flow, else VP betas)."""
    name = str(config.get("_class_name", ""))
    n = int(config.get("num_train_timesteps", 1000))
    if "FlowMatch" in name:
        return RectifiedFlowSchedule(timestep_scale=float(n))
    if config.get("trained_betas") is not None:
        return VPSchedule(betas=torch.as_tensor(config["trained_betas"]))
    return VPSchedule(
        beta_schedule=str(config.get("beta_schedule", "linear")),
        beta_start=float(config.get("beta_start", 1e-4)),
        beta_end=float(config.get("beta_end", 0.02)),
        num_train_timesteps=n,
    )


def _prediction_type_of(model: nn.Module, scheduler_config: Mapping[str, Any] | None) -> str:
    if scheduler_config is not None:
        if "FlowMatch" in str(scheduler_config.get("_class_name", "")):
            return "velocity"
        if scheduler_config.get("prediction_type") is not None:
            return check_prediction_type(str(scheduler_config["prediction_type"]))
    config = getattr(model, "config", None)
    found = getattr(config, "prediction_type", None) if config is not None else None
    if found is None and isinstance(config, Mapping):
        found = config.get("prediction_type")
    if found is None:
        raise ValueError(
            f"cannot determine the prediction type of {type(model).__name__}: its config has no 'prediction_type' and "
            "no scheduler config saying it was given; pass prediction_type='epsilon' | 'x0' | 'v' | 'velocity' (or a "
            "scheduler_config with 'prediction_type')"
        )
    return check_prediction_type(str(found))


class DiffusersDenoiser(Denoiser):
    """Adapter for diffusers ``UNet2DModel`` and ``UNet2DConditionModel`` (and models with the same call).

    The prediction type comes from ``prediction_type``, else ``scheduler_config["prediction_type"]`` (a FlowMatch
    scheduler means velocity), else ``model.config.prediction_type``; otherwise a ``ValueError`` names the problem.
    The schedule comes from ``schedule``, else the scheduler config, else diffusers' default linear betas. ``cond``
    is the ``encoder_hidden_states`` tensor of a conditional UNet, or a dict of keyword arguments for the model
    (e.g. ``{"encoder_hidden_states": e, "class_labels": y}``); a conditional UNet without it raises ``ValueError``.
    """

    def __init__(
        self,
        model: nn.Module,
        prediction_type: str | None = None,
        scheduler_config: Mapping[str, Any] | None = None,
        schedule: NoiseSchedule | None = None,
    ) -> None:
        kind = (
            check_prediction_type(prediction_type) if prediction_type else _prediction_type_of(model, scheduler_config)
        )
        if schedule is None:
            schedule = schedule_from_scheduler_config(scheduler_config or {})
        super().__init__(schedule, kind)
        self.model = model
        config = getattr(model, "config", None)
        self.needs_cond = getattr(config, "cross_attention_dim", None) is not None

    def forward(self, x: Tensor, t: Tensor | float, cond: Any = None) -> Tensor:
        timestep = self.schedule.timestep(_batch_time(t, x))
        if cond is None:
            if self.needs_cond:
                raise ValueError(
                    f"{type(self.model).__name__} is conditional (cross_attention_dim set): pass cond = "
                    "encoder_hidden_states of shape (B, tokens, cross_attention_dim)"
                )
            return self.model(x, timestep).sample
        if isinstance(cond, Mapping):
            return self.model(x, timestep, **cond).sample
        return self.model(x, timestep, encoder_hidden_states=cond).sample


class GaussianMixtureDenoiser(Denoiser):
    """Exact denoiser of a diagonal Gaussian mixture ``p0 = sum_k w_k N(mu_k, diag(s_k^2))``: predicts ``E[x0 | x_t]``.

    ``x_t | k ~ N(alpha mu_k, alpha^2 s_k^2 + sigma^2)``; ``E[x0 | x_t, k] = mu_k + alpha s_k^2 (x_t - alpha mu_k) /
    (alpha^2 s_k^2 + sigma^2)``, averaged with the posterior responsibilities of the components. The score is
    ``-(x_t - alpha x0_hat) / sigma^2``. Data are flat ``(B, D)``; ``means`` ``(K, D)``, ``stds`` ``(K, D)`` or
    ``(K,)`` or a float, ``weights`` ``(K,)`` (normalised here).
    """

    def __init__(
        self,
        means: Tensor,
        stds: Tensor | float,
        weights: Tensor | None = None,
        schedule: NoiseSchedule | None = None,
    ) -> None:
        super().__init__(schedule if schedule is not None else RectifiedFlowSchedule(), "x0")
        means = torch.as_tensor(means, dtype=torch.float32)
        if means.dim() != 2:
            raise ValueError(f"means must be (K, D), got shape {tuple(means.shape)}")
        stds = torch.as_tensor(stds, dtype=means.dtype)
        stds = stds.reshape(-1, 1).expand_as(means) if stds.dim() <= 1 else stds
        if stds.shape != means.shape or bool((stds <= 0).any()):
            raise ValueError("stds must be positive, broadcastable to means (K, D)")
        w = torch.ones(means.shape[0]) if weights is None else torch.as_tensor(weights, dtype=means.dtype)
        self.register_buffer("means", means)
        self.register_buffer("stds", stds.clone())
        self.register_buffer("log_weights", torch.log(w / w.sum()))

    def forward(self, x: Tensor, t: Tensor | float, cond: Any = None) -> Tensor:
        t = _batch_time(t, x)
        a = self.schedule.alpha(t).to(x.dtype)[:, None, None]  # (B, 1, 1)
        s = self.schedule.sigma(t).to(x.dtype)[:, None, None]
        mu, var0 = self.means[None], (self.stds**2)[None]  # (1, K, D)
        var_t = a * a * var0 + s * s
        diff = x[:, None, :] - a * mu
        log_p = self.log_weights[None] - 0.5 * (diff * diff / var_t + torch.log(var_t)).sum(-1)
        resp = torch.softmax(log_p, dim=1)  # (B, K)
        x0_k = mu + a * var0 * diff / var_t
        return (resp[:, :, None] * x0_k).sum(1)

    def score(self, x: Tensor, t: Tensor | float) -> Tensor:
        """``grad log p_t(x)`` (exact)."""
        t = _batch_time(t, x)
        a, s = self.schedule.alpha(t)[:, None], self.schedule.sigma(t)[:, None]
        return -(x - a * self(x, t)) / (s * s)


class GaussianDenoiser(Denoiser):
    """Exact denoiser of one full-covariance Gaussian ``N(mu, C)`` on flat ``(B, D)`` data: predicts ``E[x0 | x_t]``.

    With ``C = U diag(lam) U^T``: ``E[x0 | x_t] = mu + U diag(a lam / (a^2 lam + s^2)) U^T (x_t - a mu)``.
    """

    def __init__(self, mean: Tensor, cov: Tensor, schedule: NoiseSchedule | None = None) -> None:
        super().__init__(schedule if schedule is not None else RectifiedFlowSchedule(), "x0")
        cov = torch.as_tensor(cov, dtype=torch.float64)
        mean = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        if cov.shape != (mean.numel(), mean.numel()):
            raise ValueError(f"cov must be ({mean.numel()}, {mean.numel()}), got {tuple(cov.shape)}")
        lam, vecs = torch.linalg.eigh((cov + cov.T) / 2)
        if bool((lam < -1e-8 * lam.abs().max()).any()):
            raise ValueError("cov must be positive semi-definite")
        self.register_buffer("mean", mean.float())
        self.register_buffer("eigvals", lam.clamp_min(0).float())
        self.register_buffer("eigvecs", vecs.float())

    def forward(self, x: Tensor, t: Tensor | float, cond: Any = None) -> Tensor:
        t = _batch_time(t, x)
        a = self.schedule.alpha(t).to(x.dtype)[:, None]
        s = self.schedule.sigma(t).to(x.dtype)[:, None]
        z = (x - a * self.mean) @ self.eigvecs
        gain = a * self.eigvals / (a * a * self.eigvals + s * s).clamp_min(1e-20)
        return self.mean + (gain * z) @ self.eigvecs.T
