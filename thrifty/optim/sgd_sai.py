"""SGD-SaI: momentum SGD whose learning rate is scaled per tensor, once, by the gradient's g-SNR.

Paper: M. Xu, L. Xiang, X. Cai, H. Wen, "No More Adam: Learning Rate Scaling at Initialization is
All You Need", arXiv:2412.11768. Official code: github.com/AnonymousAlethiometer/SGD_SaI,
``sgd_sai/sgd_sai.py`` (v1.0.3, class ``SGD_sai``).

Update for a parameter tensor ``p`` with gradient ``g`` (``std`` is torch's unbiased std)::

    gsnr = ||g||_2 / (std(g) + eps)                   # on p's first step only, then frozen
    buf  = g                          on the first step
    buf  = momentum * buf + (1 - momentum) * g        afterwards
    p    = p * (1 - lr * weight_decay) - lr * gsnr * buf

There is no second moment, so the state is one tensor per parameter (``momentum_buffer``, none
when ``momentum == 0``) plus the frozen ``gsnr`` as a Python float: half of AdamW's bytes.

Where this follows the official code rather than the paper:

* g-SNR is computed per parameter *tensor*; the abstract speaks of parameter groups.
* The paper's Algorithm 1 divides every g-SNR by the largest one over all blocks; the official
  code does not normalise, and neither does this class.
* Weight decay is decoupled and scaled by ``lr``, not by ``lr * gsnr``.

Hazard kept for fidelity: for a 1-element tensor (or any tensor whose gradient entries are all
equal) the unbiased std is NaN or 0; the official code maps NaN to 0, so ``gsnr = |g| / eps``, a
step ``1 / eps`` times larger than intended. A scalar parameter (a learnable temperature, a bias
of a 1-output layer) therefore needs its own ``gsnr``: set ``optimizer.state[p]["gsnr"]`` to a
float before the first step and it is used instead of being computed.

Differences from the official code that leave the standard training loop unchanged: ``gsnr`` is
kept in the state (the official ``has_warmup`` flag is not in ``state_dict()``, so a resumed run
recomputes g-SNR from the next gradient; here a resumed run is bit-identical); a parameter that
first gets a gradient after step 1 gets its g-SNR then (the official code raises ``KeyError``);
``momentum=0`` works (``buf = g``; the official code raises ``UnboundLocalError``); a closure is
evaluated once on the first step (the official code evaluates it twice); ``maximize`` is the
paper's option, absent from the official code. A state dict saved by the official class (g-SNR as
a 0-dim tensor, no ``foreach``/``maximize`` keys) loads, and its g-SNR is kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from thrifty.optim._core import ThriftyOptimizer, check_range

__all__ = ["SGDSaI", "gsnr"]


def gsnr(grad: Tensor, eps: float) -> float:
    """Gradient signal-to-noise ratio of one tensor: ``||g|| / (std(g) + eps)``, NaN std read as 0."""
    return float(grad.norm() / (grad.std().nan_to_num() + eps))


class SGDSaI(ThriftyOptimizer):
    """SGD-SaI; keyword names and defaults match the official ``SGD_sai``.

    Args:
        params: parameters or param-group dicts.
        lr: learning rate, multiplied per tensor by its frozen g-SNR.
        momentum: EMA coefficient of the gradient; 0 steps along the raw gradient.
        eps: added to the gradient's std in the g-SNR.
        weight_decay: decoupled decay, ``p *= 1 - lr * weight_decay`` each step.
        foreach: ``True`` for the multi-tensor path, ``False`` for the per-tensor reference path,
            ``None`` to pick the multi-tensor path when every parameter allows it.
        maximize: ascend the objective instead (the gradient is negated; g-SNR is unaffected).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        momentum: float = 0.9,
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
    ) -> None:
        check_range("lr", lr)
        check_range("momentum", momentum, 0.0, 1.0, high_inclusive=False)
        check_range("eps", eps)
        check_range("weight_decay", weight_decay)
        defaults = dict(
            lr=lr, momentum=momentum, eps=eps, weight_decay=weight_decay, foreach=foreach, maximize=maximize
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)
        for param_state in self.state.values():
            if isinstance(param_state.get("gsnr"), Tensor):
                param_state["gsnr"] = float(param_state["gsnr"])

    def _frozen_state(self, p: Tensor, eps: float) -> dict[str, Any]:
        state = self.state[p]
        if "gsnr" not in state:
            state["gsnr"] = gsnr(p.grad, eps)
        return state

    def _step_group(self, group: dict[str, Any], params: list[Tensor], use_foreach: bool) -> None:
        if use_foreach:
            self._step_foreach(group, params)
        else:
            self._step_reference(group, params)

    def _step_reference(self, group: dict[str, Any], params: list[Tensor]) -> None:
        lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
        for p in params:
            grad = -p.grad if group["maximize"] else p.grad
            state = self._frozen_state(p, group["eps"])
            if momentum == 0:
                buf = grad
            elif "momentum_buffer" not in state:
                buf = state["momentum_buffer"] = grad.clone()
            else:
                buf = state["momentum_buffer"]
                buf.mul_(momentum).add_(grad, alpha=1 - momentum)
            if weight_decay != 0:
                p.mul_(1 - weight_decay * lr)
            p.add_(buf, alpha=-(lr * state["gsnr"]))

    def _step_foreach(self, group: dict[str, Any], params: list[Tensor]) -> None:
        lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
        grads = [p.grad for p in params]
        if group["maximize"]:
            grads = torch._foreach_neg(grads)
        states = [self._frozen_state(p, group["eps"]) for p in params]
        if momentum == 0:
            bufs = grads
        else:
            running = [
                (s["momentum_buffer"], g)
                for s, g in zip(states, grads, strict=True)
                if "momentum_buffer" in s
            ]
            if running:
                running_bufs, running_grads = map(list, zip(*running, strict=True))
                torch._foreach_mul_(running_bufs, momentum)
                torch._foreach_add_(running_bufs, running_grads, alpha=1 - momentum)
            for s, g in zip(states, grads, strict=True):
                if "momentum_buffer" not in s:
                    s["momentum_buffer"] = g.clone()
            bufs = [s["momentum_buffer"] for s in states]
        if weight_decay != 0:
            torch._foreach_mul_(params, 1 - weight_decay * lr)
        torch._foreach_add_(params, torch._foreach_mul(bufs, [-(lr * s["gsnr"]) for s in states]))
