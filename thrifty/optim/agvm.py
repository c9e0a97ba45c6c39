"""AGVM: per-module learning-rate multipliers that align each module's gradient variance with the backbone's.

Paper: Z. Xue, J. Liang, G. Song, Z. Zong, L. Chen, Y. Liu, P. Luo, "Large-batch Optimization for Dense
Visual Predictions", arXiv:2210.11078 (NeurIPS 2022). Official code: github.com/Sense-X/AGVM,
``agvm/optim/agvm_optimizer_hook.py`` (``AgvmOptimizerHook``).

Wrap any optimizer whose param groups are the modules of a network, group 0 being the reference
(the backbone). Each batch is split into halves A and B with gradients ``g_A`` and ``g_B``; every
``update_interval`` iterations from ``start_iter`` on, for each group ``k``::

    D_k  = 1 - cos(g_A,k, g_B,k)                          # variance proxy over the group's parameters
    r_k  = sqrt(clip((D_0 + 1e-6) / (D_k + 1e-6), 0.5, 10))
    mu_k = 0.97 * mu_k + 0.03 * r_k                      # mu_k starts at 1

and at every iteration from ``start_iter`` on the inner optimizer steps with ``lr_k * mu_k``, after
which each ``lr_k`` is restored to the value it had (assigned back, so there is no rounding drift).
The step uses the whole batch's gradient, the mean of the halves. With an Adam-type inner optimizer
(param groups with ``betas``) the halves are first normalised as Adam would see them,
``g / (sqrt(beta2 * v + (1 - beta2) * g**2) + eps)`` with ``v`` the current ``exp_avg_sq`` (zero before
the first step).

Where this differs from the official hook: the halves are two losses on one process rather than two
halves of the data-parallel workers (so the Adam normalisation sees each half's mean gradient, where
the official code squares it divided by the world size); the cosine is computed in float64 (float32
rounding of ``1 - cos`` is about 1e-7, not small against the 1e-6 in the ratio); gradient clipping is
left to the caller, between ``backward`` and ``step``.

Example::

    groups = module_param_groups(model, ["backbone", "head"], lr=0.1, momentum=0.9)
    agvm = AGVM(torch.optim.SGD(groups), update_interval=5, start_iter=100)
    for x, y in loader:
        (xa, xb), (ya, yb) = x.chunk(2), y.chunk(2)
        agvm.zero_grad()
        agvm.backward(loss_fn(model(xa), ya), loss_fn(model(xb), yb))
        agvm.step()
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from thrifty.optim._core import check_range

__all__ = ["AGVM", "module_param_groups"]

_STABILIZER = 1e-6
_CLIP = (0.5, 10.0)


def module_param_groups(model: nn.Module, names: Sequence[str], **options: Any) -> list[dict[str, Any]]:
    """One param group per named submodule, in order (the first is AGVM's reference), each with ``name``.

    Raises ``ValueError`` when a trainable parameter of ``model`` is in no group or in two.
    """
    groups, seen = [], set()
    for name in names:
        params = [p for p in model.get_submodule(name).parameters() if p.requires_grad]
        if any(id(p) in seen for p in params):
            raise ValueError(f"module {name!r} shares parameters with an earlier group")
        seen.update(id(p) for p in params)
        groups.append({"params": params, "name": name, **options})
    missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in seen]
    if missing:
        raise ValueError(f"parameters in no group: {', '.join(missing)}")
    return groups


class AGVM(torch.optim.Optimizer):
    """Adaptive Gradient Variance Modulator around ``optimizer``; defaults are the official hook's.

    A ``torch.optim.Optimizer`` that wraps another (as timm's ``Lookahead`` does): it shares the inner
    optimizer's param groups and state, so LR schedulers, ``clip_grad_norm_`` loops and checkpoints take it where
    they take the optimizer it wraps; ``state_dict()`` holds the inner optimizer's state and AGVM's own.

    Args:
        optimizer: any ``torch.optim.Optimizer``; its param group 0 is the reference module.
        update_interval: iterations between updates of the multipliers (official default 5, configs 10).
        start_iter: first iteration (0-based) at which multipliers are updated and applied (after warm-up).
        stop_iter: last such iteration; a value not above ``start_iter`` (default -1) means never stop.
        momentum: EMA coefficient of the multipliers.
        adam: normalise the halves as Adam would; ``None`` decides from the groups having ``betas``.

    ``backward(loss_a, loss_b)`` leaves the mean of the two halves' gradients in ``.grad`` (and measures
    ``D_k`` on update iterations); ``step()`` steps the inner optimizer with the modulated learning rates.
    ``multipliers`` are the ``mu_k``, ``variances`` the last ``D_k``, ``ratios`` the last ``r_k``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        update_interval: int = 5,
        start_iter: int = 500,
        stop_iter: int = -1,
        momentum: float = 0.97,
        adam: bool | None = None,
    ) -> None:
        if not isinstance(update_interval, int) or update_interval < 1:
            raise ValueError(f"update_interval must be an integer in [1, inf), got {update_interval!r}")
        if not isinstance(start_iter, int) or start_iter < 0:
            raise ValueError(f"start_iter must be an integer in [0, inf), got {start_iter!r}")
        check_range("momentum", momentum, 0.0, 1.0, high_inclusive=False)
        self.optimizer = optimizer
        self.update_interval = update_interval
        self.start_iter = start_iter
        self.stop_iter = stop_iter if stop_iter > start_iter else math.inf
        self.momentum = momentum
        self.adam = all("betas" in g for g in optimizer.param_groups) if adam is None else adam
        super().__init__(optimizer.param_groups, optimizer.defaults)
        self.param_groups = optimizer.param_groups  # the same dicts: a scheduler's lr change reaches the inner one
        self.state = optimizer.state
        n = len(optimizer.param_groups)
        self.multipliers = [1.0] * n
        self.variances = [math.nan] * n
        self.ratios = [math.nan] * n
        self.iteration = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def _active(self) -> bool:
        return self.start_iter <= self.iteration <= self.stop_iter

    def updates_now(self) -> bool:
        """Whether this iteration measures the halves and updates the multipliers."""
        return self._active() and self.iteration % self.update_interval == 0

    def backward(self, loss_a: Tensor, loss_b: Tensor) -> Tensor:
        """Accumulate the mean of the halves' gradients into ``.grad``; returns the mean loss (detached)."""
        mean_loss = (loss_a + loss_b) / 2
        if not self.updates_now():
            mean_loss.backward()
            return mean_loss.detach()
        params = [p for g in self.param_groups for p in g["params"] if p.requires_grad]
        grads_a = torch.autograd.grad(loss_a, params, retain_graph=True, allow_unused=True)
        grads_b = torch.autograd.grad(loss_b, params, allow_unused=True)
        halves = {}
        for p, ga, gb in zip(params, grads_a, grads_b, strict=True):
            ga = torch.zeros_like(p) if ga is None else ga
            gb = torch.zeros_like(p) if gb is None else gb
            halves[p] = (ga, gb)
            mean = (ga + gb) / 2
            if p.grad is None:
                p.grad = mean
            else:
                p.grad.add_(mean)
        self.observe(halves)
        return mean_loss.detach()

    def observe(self, halves: dict[Tensor, tuple[Tensor, Tensor]]) -> None:
        """Update ``D_k``, ``r_k`` and ``mu_k`` from each parameter's two half-batch gradients."""
        variances = []
        for group in self.param_groups:
            flat_a, flat_b = [], []
            for p in group["params"]:
                if p not in halves:
                    continue
                ga, gb = halves[p]
                if self.adam:
                    ga, gb = self._adam_normalised(p, group, ga), self._adam_normalised(p, group, gb)
                flat_a.append(ga.reshape(-1).double())
                flat_b.append(gb.reshape(-1).double())
            if not flat_a:
                variances.append(math.nan)
                continue
            cos = torch.cosine_similarity(torch.cat(flat_a), torch.cat(flat_b), dim=0)
            variances.append(1.0 - float(cos))
        reference = variances[0]
        for k, d in enumerate(variances):
            self.variances[k] = d
            if math.isnan(d) or math.isnan(reference):
                continue
            ratio = min(max((reference + _STABILIZER) / (d + _STABILIZER), _CLIP[0]), _CLIP[1])
            self.ratios[k] = math.sqrt(ratio)
            # mu + (1 - m) (r - mu) is the EMA m mu + (1 - m) r, written so that mu stays exactly 1 when r is 1.
            self.multipliers[k] += (1.0 - self.momentum) * (self.ratios[k] - self.multipliers[k])

    def _adam_normalised(self, p: Tensor, group: dict[str, Any], grad: Tensor) -> Tensor:
        beta2 = group["betas"][1]
        exp_avg_sq = self.optimizer.state.get(p, {}).get("exp_avg_sq")
        second = grad.square().mul_(1 - beta2)
        if exp_avg_sq is not None:
            second.add_(exp_avg_sq, alpha=beta2)
        return grad / second.sqrt_().add_(group["eps"])

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Step the inner optimizer with ``lr_k * mu_k`` (from ``start_iter`` on), then restore each ``lr_k``."""
        if not self._active():
            self.iteration += 1
            return self.optimizer.step(closure)
        saved = [group["lr"] for group in self.param_groups]
        for group, mu in zip(self.param_groups, self.multipliers, strict=True):
            group["lr"] = group["lr"] * mu
        try:
            return self.optimizer.step(closure)
        finally:
            for group, lr in zip(self.param_groups, saved, strict=True):
                group["lr"] = lr
            self.iteration += 1

    def state_dict(self) -> dict[str, Any]:
        """The inner optimizer's state dict and AGVM's own state (iteration, multipliers, last D_k and r_k)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "agvm": {
                "iteration": self.iteration,
                "multipliers": list(self.multipliers),
                "variances": list(self.variances),
                "ratios": list(self.ratios),
            },
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        own = state_dict["agvm"]
        if len(own["multipliers"]) != len(self.param_groups):
            raise ValueError(
                f"state has {len(own['multipliers'])} multipliers for {len(self.param_groups)} param groups"
            )
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self.param_groups = self.optimizer.param_groups
        self.state = self.optimizer.state
        self.iteration = int(own["iteration"])
        self.multipliers = [float(v) for v in own["multipliers"]]
        self.variances = [float(v) for v in own["variances"]]
        self.ratios = [float(v) for v in own["ratios"]]
