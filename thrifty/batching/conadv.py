"""Concurrent adversarial learning (ConAdv): adversarial examples from stale weights.

Liu, Chen, Cheng, Hsieh and You, "Concurrent Adversarial Learning for Large-Batch Training" (ICLR 2022,
arXiv 2106.00221). Adversarial training needs two sequential gradient computations per step:
the input gradient that builds the adversarial example, then the parameter gradient. ConAdv builds the
example with the weights of ``tau`` steps earlier, so both computations only need weights that already
exist and can run at the same time. With FGSM of radius ``eps`` and data range ``[lo, hi]``:

    x_adv = clamp(x + eps * sign(grad_x L(theta_{t - tau}, x, y)), lo, hi)       (no gradient to theta)
    g_t   = grad_theta [ L(theta_t, x, y) + L(theta_t, x_adv, y) ]
    theta_{t+1} = optimizer step with g_t

``tau = 0`` is sequential adversarial training (``adversarial_step``). The stale weights live in a copy
of the model (parameters and buffers), refreshed from snapshots taken before each optimizer step; the
paper runs the two computations on different workers, which this single-process class does not do: its
``perturb`` and ``update`` run one after the other, and a pipelined implementation would compute the
next batch's example with the current weights while the current batch's parameter gradient is computed.
No official code was found; the rule follows the paper's description (clean and adversarial losses with
equal weight, one FGSM step).
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConAdv", "adversarial_step", "fgsm"]

Loss = Callable[[Tensor, Tensor], Tensor]


def fgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    loss_fn: Loss = F.cross_entropy,
    data_range: tuple[float, float] | None = (0.0, 1.0),
) -> Tensor:
    """``clamp(x + eps * sign(grad_x loss_fn(model(x), y)), *data_range)``, detached; no parameter ``.grad``
    is touched (gradients are enabled inside, so it works under ``torch.no_grad``). With ``x`` inside
    ``data_range``, ``|x_adv - x| <= eps`` elementwise."""
    if eps < 0:
        raise ValueError(f"eps must be non-negative, got {eps}")
    x_in = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(loss_fn(model(x_in), y), x_in)
    x_adv = x.detach() + eps * grad.sign()
    return x_adv if data_range is None else x_adv.clamp(*data_range)


def _adversarial_update(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, x_adv: Tensor, y: Tensor, loss_fn: Loss
) -> Tensor:
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y) + loss_fn(model(x_adv.detach()), y)
    loss.backward()
    optimizer.step()
    return loss.detach()


def adversarial_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    eps: float,
    loss_fn: Loss = F.cross_entropy,
    data_range: tuple[float, float] | None = (0.0, 1.0),
) -> Tensor:
    """One step of sequential adversarial training: FGSM with the current weights, then a step on the clean
    plus adversarial loss; returns that loss."""
    x_adv = fgsm(model, x, y, eps, loss_fn, data_range)
    return _adversarial_update(model, optimizer, x, x_adv, y, loss_fn)


class ConAdv:
    """Adversarial training whose examples come from weights ``staleness`` steps old.

    ``step(x, y)`` is ``perturb(x, y)`` (FGSM against the stale copy) then ``update(x, x_adv, y)`` (a step on
    the clean plus adversarial loss at the current weights). Until ``staleness`` steps have been taken the
    copy holds the initial weights. ``staleness=0`` perturbs with the model itself: sequential adversarial
    training, step for step.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        eps: float,
        *,
        staleness: int = 1,
        loss_fn: Loss = F.cross_entropy,
        data_range: tuple[float, float] | None = (0.0, 1.0),
    ) -> None:
        if staleness < 0:
            raise ValueError(f"staleness must be non-negative, got {staleness}")
        if eps < 0:
            raise ValueError(f"eps must be non-negative, got {eps}")
        self.model, self.optimizer, self.eps = model, optimizer, eps
        self.staleness, self.loss_fn, self.data_range = staleness, loss_fn, data_range
        self.stale_model = model
        self._snapshots: deque[dict[str, Tensor]] = deque()
        if staleness:
            self.stale_model = copy.deepcopy(model).requires_grad_(False)

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        """The FGSM example of ``(x, y)`` against the stale weights (the stale copy runs in the model's mode)."""
        self.stale_model.train(self.model.training)
        return fgsm(self.stale_model, x, y, self.eps, self.loss_fn, self.data_range)

    def update(self, x: Tensor, x_adv: Tensor, y: Tensor) -> Tensor:
        """Snapshot the current weights for later perturbations, then step on the clean plus adversarial loss at
        the current weights; returns that loss."""
        if self.staleness:
            self._snapshots.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
            if len(self._snapshots) == self.staleness:
                self.stale_model.load_state_dict(self._snapshots.popleft())
        return _adversarial_update(self.model, self.optimizer, x, x_adv, y, self.loss_fn)

    def step(self, x: Tensor, y: Tensor) -> Tensor:
        """``update(x, perturb(x, y), y)``: one ConAdv training step; returns the clean plus adversarial loss."""
        return self.update(x, self.perturb(x, y), y)
