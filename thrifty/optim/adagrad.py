"""AdaGrad and AdaGradNorm: the base optimizers of AdAdaGrad.

Paper: M. Lau, C. Liu, J. Rouzie, L. Kong (et al.), "AdAdaGrad: Adaptive Batch Size Schemes for Adaptive
Gradient Methods", arXiv:2402.11215. The paper grows the batch size with adaptive-sampling tests while it
steps with one of these two methods; this module holds the two methods (the batch-size tests live
elsewhere). No official code was released.

Coordinate-wise AdaGrad, for a parameter ``p`` at step ``t`` (elementwise)::

    g   = grad + weight_decay * p                  # coupled L2, as in torch.optim.Adagrad
    v   = v + g * g                                # v starts at initial_accumulator_value
    p   = p - lr / (1 + (t - 1) * lr_decay) * g / (sqrt(v) + eps)

AdaGradNorm (one scalar accumulator per parameter group, over all of the group's parameters; put every
parameter in one group for a global accumulator)::

    v   = v + sum over the group's parameters of ||g||^2       # v_0 = initial_accumulator_value = b_0^2
    p   = p - lr * g / (sqrt(v) + eps)

The paper writes ``x - alpha * g / sqrt(v_k)`` with ``v_0 = b_0^2``: that is ``eps=0`` and
``initial_accumulator_value=b_0**2`` here. The defaults (``lr=1e-2``, ``eps=1e-10``, accumulator 0) and
the place of ``eps`` (outside the square root) are torch.optim.Adagrad's, so ``AdaGrad`` steps exactly
as torch's and loads its state dicts (same keys: a float tensor ``step`` and ``sum`` per parameter).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from thrifty.optim._core import ThriftyOptimizer, check_fused, check_range

__all__ = ["AdaGrad", "AdaGradNorm"]


class AdaGrad(ThriftyOptimizer):
    """Coordinate-wise AdaGrad; keyword names and defaults match ``torch.optim.Adagrad``.

    Args:
        params: parameters or param-group dicts.
        lr: learning rate.
        lr_decay: the learning rate at step ``t`` is ``lr / (1 + (t - 1) * lr_decay)``.
        weight_decay: coupled L2 coefficient, added to the gradient.
        initial_accumulator_value: starting value of the sum of squared gradients (``b_0**2``).
        eps: added to ``sqrt(v)``.
        foreach: ``True`` for the multi-tensor path, ``False`` for the per-tensor reference path,
            ``None`` to let ``fused`` decide (and otherwise pick the multi-tensor path on CUDA).
        maximize: ascend the objective instead (the gradient is negated first).
        fused: run torch's fused Adagrad kernel (``torch._fused_adagrad_``, the same math in one pass
            per tensor). ``None`` (the default) uses it when ``foreach`` is ``None`` too and every
            parameter is a floating tensor on a CPU or CUDA device, since it is the fastest path there
            (``thrifty speed``: about 0.6x the step time of torch's fused AdamW on a CPU).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_range("lr", lr)
        check_range("lr_decay", lr_decay)
        check_range("weight_decay", weight_decay)
        check_range("initial_accumulator_value", initial_accumulator_value)
        check_range("eps", eps)
        check_fused(foreach, fused)
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
            foreach=foreach,
            maximize=maximize,
            fused=fused,
        )
        super().__init__(params, defaults)

    def _init_state(self, p: Tensor, initial: float) -> dict[str, Any]:
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["sum"] = torch.full_like(p, initial, memory_format=torch.preserve_format)
        return state

    @staticmethod
    def _use_fused(group: dict[str, Any], params: list[Tensor]) -> bool:
        fused = group["fused"]
        if fused is not None:
            return bool(fused)
        if group["foreach"] is not None:
            return False
        return all(
            type(p) in (Tensor, torch.nn.Parameter) and p.device.type in ("cpu", "cuda") and torch.is_floating_point(p)
            for p in params
        )

    def _step_group(self, group: dict[str, Any], params: list[Tensor], use_foreach: bool) -> None:
        states = [self._init_state(p, group["initial_accumulator_value"]) for p in params]
        if self._use_fused(group, params):
            self._step_fused(group, params, states)
        elif use_foreach:
            self._step_foreach(group, params, states)
        else:
            self._step_reference(group, params, states)

    @staticmethod
    def _clr(group: dict[str, Any], step: float) -> float:
        return group["lr"] / (1 + (step - 1) * group["lr_decay"])

    def _step_reference(self, group: dict[str, Any], params: list[Tensor], states: list[dict[str, Any]]) -> None:
        for p, state in zip(params, states, strict=True):
            grad = -p.grad if group["maximize"] else p.grad
            state["step"] += 1
            if group["weight_decay"] != 0:
                grad = grad.add(p, alpha=group["weight_decay"])
            state["sum"].addcmul_(grad, grad, value=1)
            std = state["sum"].sqrt().add_(group["eps"])
            p.addcdiv_(grad, std, value=-self._clr(group, state["step"].item()))

    def _step_foreach(self, group: dict[str, Any], params: list[Tensor], states: list[dict[str, Any]]) -> None:
        grads = [p.grad for p in params]
        if group["maximize"]:
            grads = torch._foreach_neg(grads)
        steps = [s["step"] for s in states]
        sums = [s["sum"] for s in states]
        torch._foreach_add_(steps, 1)
        if group["weight_decay"] != 0:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
        torch._foreach_addcmul_(sums, grads, grads, value=1)
        stds = torch._foreach_sqrt(sums)
        torch._foreach_add_(stds, group["eps"])
        torch._foreach_addcdiv_(params, grads, stds, [-self._clr(group, s.item()) for s in steps])

    @staticmethod
    def _step_fused(group: dict[str, Any], params: list[Tensor], states: list[dict[str, Any]]) -> None:
        by_device: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for i, p in enumerate(params):
            by_device.setdefault((p.device, p.dtype), []).append(i)
        for indices in by_device.values():
            # The kernel reads the step counters (incremented here, as torch does) on the parameters' device.
            steps = []
            for i in indices:
                if states[i]["step"].device != params[i].device:
                    states[i]["step"] = states[i]["step"].to(params[i].device)
                steps.append(states[i]["step"])
            torch._foreach_add_(steps, 1)
            torch._fused_adagrad_(
                [params[i] for i in indices],
                [params[i].grad for i in indices],
                [states[i]["sum"] for i in indices],
                steps,
                lr=group["lr"],
                lr_decay=group["lr_decay"],
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=group["maximize"],
            )


class AdaGradNorm(ThriftyOptimizer):
    """AdaGrad-Norm: one scalar step size per param group, ``lr / (sqrt(b_0^2 + sum_k ||g_k||^2) + eps)``.

    Args:
        params: parameters or param-group dicts; each group has its own accumulator.
        lr: learning rate (the paper's ``alpha`` or ``eta``).
        weight_decay: coupled L2 coefficient, added to the gradient before its norm is taken.
        initial_accumulator_value: ``v_0 = b_0**2``.
        eps: added to ``sqrt(v)``; the paper has none (``eps=0`` with a positive ``b_0``).
        foreach: ``True`` for the multi-tensor path, ``False`` for the per-tensor reference path,
            ``None`` to pick the multi-tensor path on CUDA.
        maximize: ascend the objective instead (the gradient is negated first).

    State: the group's accumulator is a float in the param group (``group["accumulator"]``, float64,
    saved by ``state_dict`` with the group's options) and its step count is ``group["step"]``; there is
    no per-parameter state, so ``state_bytes`` is 0.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
    ) -> None:
        check_range("lr", lr)
        check_range("weight_decay", weight_decay)
        check_range("initial_accumulator_value", initial_accumulator_value)
        check_range("eps", eps)
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
            foreach=foreach,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    @staticmethod
    def step_size(group: dict[str, Any]) -> float:
        """The scalar ``lr / (sqrt(v) + eps)`` that the group's last step used (before any step: from v_0)."""
        v = group.get("accumulator", float(group["initial_accumulator_value"]))
        return group["lr"] / (math.sqrt(v) + group["eps"])

    def _step_group(self, group: dict[str, Any], params: list[Tensor], use_foreach: bool) -> None:
        grads = [p.grad for p in params]
        if use_foreach:
            if group["maximize"]:
                grads = torch._foreach_neg(grads)
            if group["weight_decay"] != 0:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            squared = sum(float(n) ** 2 for n in torch._foreach_norm(grads))
        else:
            if group["maximize"]:
                grads = [-g for g in grads]
            if group["weight_decay"] != 0:
                grads = [g.add(p, alpha=group["weight_decay"]) for g, p in zip(grads, params, strict=True)]
            squared = sum(float(g.norm()) ** 2 for g in grads)
        group["accumulator"] = group.get("accumulator", float(group["initial_accumulator_value"])) + squared
        group["step"] = group.get("step", 0) + 1
        alpha = -self.step_size(group)
        if use_foreach:
            torch._foreach_add_(params, grads, alpha=alpha)
        else:
            for p, g in zip(params, grads, strict=True):
                p.add_(g, alpha=alpha)
