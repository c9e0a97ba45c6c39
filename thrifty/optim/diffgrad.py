"""diffGrad: Adam whose first moment is damped by a friction coefficient from successive gradients.

Paper: S. R. Dubey, S. Chakraborty, S. K. Roy, S. Mukherjee, S. K. Singh, B. B. Chaudhuri,
"diffGrad: An Optimization Method for Convolutional Neural Networks", arXiv:1909.11015
(IEEE TNNLS 2020). Official code: github.com/shivram1987/diffGrad, ``diffGrad_v2.py``.

Update for a parameter ``p`` at step ``t`` (elementwise; ``g_prev`` starts at zero)::

    g      = grad + weight_decay * p                       # coupled L2, as in torch.optim.Adam
    m      = beta1 * m + (1 - beta1) * g
    v      = beta2 * v + (1 - beta2) * g**2
    xi     = 1 / (1 + exp(-|g_prev - g|))                  # friction, in [0.5, 1)
    g_prev = g                                             # a copy, never an alias of p.grad
    p      = p - lr * sqrt(1 - beta2**t) / (1 - beta1**t) * xi * m / (sqrt(v) + eps)

Where this follows the official ``diffGrad_v2.py`` rather than the paper:

* The bias corrections are folded into the step size and ``eps`` is added to the *uncorrected*
  ``sqrt(v)`` (torch-Adam style); the paper adds ``eps`` to the corrected ``sqrt(v_hat)``.
* ``g_prev`` is a copy of the gradient. The paper's experiments ran ``diffGrad.py``, which kept a
  reference to ``p.grad``, so ``|g_prev - g|`` was always 0, ``xi`` always 0.5, and the method was
  Adam at half the learning rate; v2 fixes that and is what this class reproduces.
* ``g_prev`` is zero before the first step, so the first friction is ``sigmoid(|g_1|)``, not 0.5.
* Weight decay is coupled L2 and is added to the gradient *before* the friction, so ``g_prev``
  holds ``grad + weight_decay * p``.

One deliberate difference from the official code: it adds the weight-decay term to ``p.grad`` in
place, so after ``step()`` ``p.grad`` holds ``grad + weight_decay * p``; this class leaves
``p.grad`` untouched. Trajectories are the same whenever gradients are zeroed between steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from thrifty.optim._core import ThriftyOptimizer, check_betas, check_range

__all__ = ["DiffGrad", "friction"]


def friction(previous_grad: Tensor, grad: Tensor) -> Tensor:
    """The friction ``1 / (1 + exp(-|previous_grad - grad|))``, in [0.5, 1].

    Spelled as in the official code rather than with ``torch.sigmoid``, which can differ in the
    last bit; the same expression keeps float64 runs bit-identical to the official implementation.
    """
    return torch.sub(previous_grad, grad).abs_().neg_().exp_().add_(1.0).reciprocal_()


class DiffGrad(ThriftyOptimizer):
    """diffGrad (v2 of the official code); keyword names and defaults match ``diffgrad`` there.

    Args:
        params: parameters or param-group dicts.
        lr: learning rate.
        betas: EMA coefficients of the gradient and of its square.
        eps: added to ``sqrt(v)`` (the bias-uncorrected second moment).
        weight_decay: coupled L2 coefficient, added to the gradient.
        foreach: ``True`` for the multi-tensor path, ``False`` for the per-tensor reference path,
            ``None`` to pick the multi-tensor path when every parameter allows it.
        maximize: ascend the objective instead (the gradient is negated first).

    State per parameter: ``step`` (int), ``exp_avg``, ``exp_avg_sq`` and ``previous_grad`` (the
    same keys as the official code, so its checkpoints load).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
    ) -> None:
        check_range("lr", lr)
        check_betas(betas)
        check_range("eps", eps)
        check_range("weight_decay", weight_decay)
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=foreach, maximize=maximize
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)

    def _init_state(self, p: Tensor) -> dict[str, Any]:
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["previous_grad"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def _step_group(self, group: dict[str, Any], params: list[Tensor], use_foreach: bool) -> None:
        if use_foreach:
            self._step_foreach(group, params)
        else:
            self._step_reference(group, params)

    def _step_reference(self, group: dict[str, Any], params: list[Tensor]) -> None:
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        for p in params:
            grad = -p.grad if group["maximize"] else p.grad
            state = self._init_state(p)
            state["step"] += 1
            step = state["step"]
            if weight_decay != 0:
                grad = grad.add(p, alpha=weight_decay)
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = exp_avg_sq.sqrt().add_(eps)
            xi = friction(state["previous_grad"], grad)
            state["previous_grad"].copy_(grad)
            step_size = lr * math.sqrt(1 - beta2**step) / (1 - beta1**step)
            p.addcdiv_(xi.mul_(exp_avg), denom, value=-step_size)

    def _step_foreach(self, group: dict[str, Any], params: list[Tensor]) -> None:
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        grads = [p.grad for p in params]
        if group["maximize"]:
            grads = torch._foreach_neg(grads)
        states = [self._init_state(p) for p in params]
        for state in states:
            state["step"] += 1
        if weight_decay != 0:
            grads = torch._foreach_add(grads, params, alpha=weight_decay)
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        previous_grads = [s["previous_grad"] for s in states]

        torch._foreach_mul_(exp_avgs, beta1)
        torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        denoms = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(denoms, eps)

        xis = torch._foreach_sub(previous_grads, grads)
        torch._foreach_abs_(xis)
        torch._foreach_neg_(xis)
        torch._foreach_exp_(xis)
        torch._foreach_add_(xis, 1.0)
        torch._foreach_reciprocal_(xis)
        torch._foreach_copy_(previous_grads, grads)

        torch._foreach_mul_(xis, exp_avgs)
        step_sizes = [-(lr * math.sqrt(1 - beta2 ** s["step"]) / (1 - beta1 ** s["step"])) for s in states]
        torch._foreach_addcdiv_(params, xis, denoms, step_sizes)
