"""Optimizer step time and state memory, side by side with torch's AdamW, as ratios.

Each optimizer steps its own copy of the same parameters with the same fixed gradients; the
optimizers are timed in interleaved rounds (one step of each per round) so that background
load on a shared machine hits them alike, and the median per optimizer is divided by the
baselines' medians. Absolute times on a noisy machine mean little; the ratios are the result.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from thrifty.optim import create_optimizer, get_optimizer_class, state_bytes

__all__ = ["MODELS", "SpeedResult", "measure_speed", "parameters_and_gradients", "parse_spec"]

_MLPS: dict[str, tuple[int, ...]] = {
    "mlp8m": (1024, 2048, 2048, 1024, 10),
    "mlp1m": (256, 1024, 512, 256, 10),
    "mlp50k": (64, 256, 128, 10),
}
MODELS = (*_MLPS, "charlm")

DEFAULT_SPECS = (
    "adamw:fused",
    "adamw:foreach",
    "adamw:single",
    "soap",
    "sgd_sai",
    "sgd_sai:single",
    "sgd_sai:foreach",
    "sgd_sai:fused",
    "diffgrad",
    "diffgrad:single",
    "diffgrad:foreach",
    "diffgrad:fused",
    "adagrad",
    "adagrad_norm",
    "adamw8bit",
    "adamw8bit:reference",
    "sgd8bit",
)

# Settings an optimizer needs that have no default (SGD8bit, as torch.optim.SGD, has no default lr,
# and stores no state without momentum).
_REQUIRED: dict[str, dict[str, Any]] = {"sgd8bit": {"lr": 1e-3, "momentum": 0.9}}

_VARIANTS: dict[str, dict[str, Any]] = {
    "fused": {"fused": True},
    "foreach": {"foreach": True},
    "single": {"foreach": False, "fused": False},
    "reference": {"fused": False},
}


# Peer libraries' optimizers, timed side by side when installed: name -> (module, class, kwargs).
PEERS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "bnb.adamw8bit": ("bitsandbytes.optim", "AdamW8bit", {}),
    "bnb.sgd8bit": ("bitsandbytes.optim", "SGD8bit", {"lr": 1e-3, "momentum": 0.9}),
}


def _peer(name: str, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    module, cls, kwargs = PEERS[name]
    return getattr(importlib.import_module(module), cls)(params, **kwargs)


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"name[:variant]"`` -> (optimizer name, constructor kwargs); variants: fused, foreach, single, reference.

    ``reference`` is ``fused=False``: the whole-tensor reference path of the 8-bit optimizers, whose
    default (no variant) and ``fused`` variant are their native kernels. Names in ``PEERS`` (no
    variant) are other libraries' optimizers.
    """
    name, _, variant = spec.partition(":")
    if name in PEERS:
        package = PEERS[name][0].split(".")[0]
        if variant:
            raise ValueError(f"{name} takes no variant, got {spec!r}")
        if importlib.util.find_spec(package) is None:
            raise ValueError(f"{name} needs {package} installed (pip install {package})")
        return name, {}
    cls = get_optimizer_class(name)
    if variant and variant not in _VARIANTS:
        raise ValueError(f"unknown variant {variant!r} in {spec!r}; valid variants: {', '.join(_VARIANTS)}")
    if not variant:
        return name, {}
    kwargs = _variant_kwargs(cls, variant)
    if kwargs is None:
        paths = ", ".join(v for v in _VARIANTS if _variant_kwargs(cls, v) is not None) or "none"
        raise ValueError(f"{name} has no {variant!r} path; its variants: {paths}")
    return name, kwargs


def _variant_kwargs(cls: type, variant: str) -> dict[str, Any] | None:
    """The constructor arguments of ``variant`` that ``cls`` takes (a path switched off that it lacks is dropped), or
    ``None`` when it lacks the path the variant asks for."""
    accepted = inspect.signature(cls).parameters
    wanted = _VARIANTS[variant]
    if any(value and key not in accepted for key, value in wanted.items()) or not any(k in accepted for k in wanted):
        return None
    return {key: value for key, value in wanted.items() if key in accepted}


@dataclass
class SpeedResult:
    spec: str
    median_ms: float
    mean_ms: float
    first_step_ms: float
    state_bytes: int
    state_bytes_per_param: float
    ratio_vs: dict[str, float]
    state_ratio_vs_adamw: float | None

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def parameters_and_gradients(model: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Initial parameters and one fixed gradient per parameter.

    The MLPs get random gradients of realistic scale; ``charlm`` (the default char-LM workload,
    with its embeddings, norms and attention shapes) gets the true gradient of one batch.
    """
    generator = torch.Generator().manual_seed(0)
    if model == "charlm":
        from thrifty.bench.workloads import make_task

        task = make_task("charlm", seed=0)
        task.loss(task.model, task.next_batch()).backward()
        params = list(task.model.parameters())
        return [p.detach().clone() for p in params], [p.grad.detach().clone() for p in params]
    widths = _MLPS[model]
    params, grads = [], []
    for a, b in zip(widths[:-1], widths[1:], strict=True):
        for shape in ((b, a), (b,)):
            params.append(torch.randn(shape, generator=generator) * 0.02)
            grads.append(torch.randn(shape, generator=generator) * 1e-3)
    return params, grads


def measure_speed(
    specs: Sequence[str] = DEFAULT_SPECS,
    model: str = "mlp8m",
    rounds: int = 20,
    baselines: Sequence[str] = ("adamw:fused", "adamw:foreach"),
    on_round: Callable[[int], None] | None = None,
) -> list[SpeedResult]:
    """Median optimizer-step time of each spec over interleaved rounds, and ratios to ``baselines``.

    The first step is timed separately (SOAP's first step only builds its preconditioner); the
    mean includes periodic work such as SOAP's eigenbasis refresh, which the median skips.
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; valid models: {', '.join(MODELS)}")
    if rounds < 1:
        raise ValueError(f"rounds must be in [1, inf), got {rounds}")
    all_specs = list(dict.fromkeys([*baselines, *specs]))
    initial, grads = parameters_and_gradients(model)
    optimizers = {}
    for spec in all_specs:
        name, kwargs = parse_spec(spec)
        params = [nn.Parameter(p.clone()) for p in initial]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        if name in PEERS:
            optimizers[spec] = _peer(name, params)
        else:
            optimizers[spec] = create_optimizer(params, name, **{**_REQUIRED.get(name, {}), **kwargs})
    first = {}
    for spec, opt in optimizers.items():
        start = time.perf_counter()
        opt.step()
        first[spec] = (time.perf_counter() - start) * 1e3
    times: dict[str, list[float]] = {spec: [] for spec in optimizers}
    for r in range(rounds):
        for spec, opt in optimizers.items():
            start = time.perf_counter()
            opt.step()
            times[spec].append((time.perf_counter() - start) * 1e3)
        if on_round is not None:
            on_round(r)
    medians = {spec: statistics.median(t) for spec, t in times.items()}
    adamw_bytes = state_bytes(optimizers[baselines[0]]) if baselines and baselines[0].startswith("adamw") else None
    results = []
    n_params = sum(p.numel() for p in initial)
    for spec, opt in optimizers.items():
        nbytes = state_bytes(opt)
        results.append(
            SpeedResult(
                spec=spec,
                median_ms=medians[spec],
                mean_ms=statistics.fmean(times[spec]),
                first_step_ms=first[spec],
                state_bytes=nbytes,
                state_bytes_per_param=nbytes / n_params,
                ratio_vs={b: medians[spec] / medians[b] for b in baselines},
                state_ratio_vs_adamw=nbytes / adamw_bytes if adamw_bytes else None,
            )
        )
    return results
