"""A registry of optimizers by name, and ``create_optimizer`` to build one from a string.

Modelled on timm's optimizer factory: each entry is a frozen ``OptimInfo`` whose class is
imported lazily, so listing optimizers never imports heavy modules. The torch baselines are
registered too, so a benchmark can swap ``"adamw"`` for ``"soap"`` by changing one string.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "OptimInfo",
    "UnknownOptimizerError",
    "create_optimizer",
    "get_optimizer_class",
    "list_optimizers",
    "register_optimizer",
]


class UnknownOptimizerError(KeyError):
    """Raised for a name that is not registered; the message lists the valid names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class OptimInfo:
    """Registry entry: ``target`` is a class or a ``"module:Class"`` string imported on demand."""

    name: str
    target: Any
    description: str
    defaults: dict[str, Any] = field(default_factory=dict)

    def resolve(self) -> type[torch.optim.Optimizer]:
        if isinstance(self.target, str):
            module, _, attr = self.target.partition(":")
            return getattr(importlib.import_module(module), attr)
        return self.target


_REGISTRY: dict[str, OptimInfo] = {}


def register_optimizer(info: OptimInfo) -> None:
    """Add (or replace) an entry; names are case-insensitive."""
    _REGISTRY[info.name.lower()] = info


def list_optimizers(pattern: str | None = None, with_description: bool = False) -> list:
    """Registered names, optionally filtered by a shell-style pattern such as ``"adam*"``."""
    names = sorted(n for n in _REGISTRY if pattern is None or fnmatch.fnmatch(n, pattern.lower()))
    if with_description:
        return [(n, _REGISTRY[n].description) for n in names]
    return names


def _info(name: str) -> OptimInfo:
    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        raise UnknownOptimizerError(
            f"unknown optimizer {name!r}; valid names: {', '.join(list_optimizers())}"
        ) from None


def get_optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """The optimizer class registered under ``name``."""
    return _info(name).resolve()


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def create_optimizer(
    model_or_params: nn.Module | Iterable[Any],
    name: str,
    *,
    no_decay_1d: bool = True,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """Build the optimizer registered as ``name``.

    ``kwargs`` go to the optimizer's constructor over the registry's defaults. When a module
    is passed with a non-zero ``weight_decay`` and ``no_decay_1d`` is true, biases and
    normalisation weights (tensors with fewer than two dimensions) get no weight decay, as in
    timm and most training recipes; pass parameters or groups yourself for full control.
    """
    info = _info(name)
    cls = info.resolve()
    options = {**info.defaults, **kwargs}
    if isinstance(model_or_params, nn.Module):
        wd = options.get("weight_decay", 0.0)
        if no_decay_1d and wd:
            params: Any = _param_groups(model_or_params, wd)
        else:
            params = [p for p in model_or_params.parameters() if p.requires_grad]
    else:
        params = list(model_or_params)
    return cls(params, **options)


for _info_entry in (
    OptimInfo("adamw", torch.optim.AdamW, "torch.optim.AdamW (decoupled weight decay)"),
    OptimInfo("adam", torch.optim.Adam, "torch.optim.Adam"),
    OptimInfo("sgd", torch.optim.SGD, "torch.optim.SGD (pass momentum=0.9 for heavy ball)"),
    OptimInfo(
        "diffgrad",
        "thrifty.optim.diffgrad:DiffGrad",
        "diffGrad: Adam with a friction coefficient from successive gradients (Dubey et al., 1909.11015)",
    ),
    OptimInfo(
        "sgd_sai",
        "thrifty.optim.sgd_sai:SGDSaI",
        "SGD-SaI: momentum SGD with per-tensor g-SNR learning-rate scaling at init (2412.11768)",
    ),
    OptimInfo(
        "soap",
        "thrifty.optim.soap:SOAP",
        "SOAP: Adam in the eigenbasis of Shampoo's preconditioner (Vyas et al., 2409.11321)",
    ),
    OptimInfo("adagrad", "thrifty.optim.adagrad:AdaGrad", "AdaGrad, coordinate-wise (AdAdaGrad's base, 2402.11215)"),
    OptimInfo(
        "adagrad_norm",
        "thrifty.optim.adagrad:AdaGradNorm",
        "AdaGrad-Norm: one scalar accumulator per param group (AdAdaGrad's base, 2402.11215)",
    ),
    OptimInfo(
        "frugal",
        "thrifty.optim.frugal:FRUGAL",
        "FRUGAL: AdamW on a projected gradient slice, signSGD on the residual (Zmushko et al., 2411.07837)",
    ),
    OptimInfo(
        "adam8bit",
        "thrifty.optim.adam8bit:Adam8bit",
        "Adam with 8-bit block-wise quantized moments (Dettmers et al., 2110.02861)",
    ),
    OptimInfo(
        "adamw8bit",
        "thrifty.optim.adam8bit:AdamW8bit",
        "AdamW with 8-bit block-wise quantized moments (Dettmers et al., 2110.02861)",
    ),
    OptimInfo(
        "sgd8bit",
        "thrifty.optim.sgd8bit:SGD8bit",
        "SGD with an 8-bit block-wise quantized momentum buffer (Dettmers et al., 2110.02861)",
    ),
):
    register_optimizer(_info_entry)
