"""SSO: stochastic surrogate optimization in target space, wrapped around a model's parameters.

Paper: J. W. Lavington, S. Vaswani, R. Babanezhad, M. Schmidt, N. Le Roux, "Target-based Surrogates for
Stochastic Optimization", arXiv:2302.02607 (ICML 2023). Official code:
github.com/WilderLavington/Target-Based-Surrogates-For-Stochastic-Optimization, ``optimizers/sgd_fmdopt.py``
(``SGD_FMDOpt``, the paper's SSO) and ``optimizers/lsopt.py`` (its inner line search).

When the gradient of the loss with respect to the model's outputs ("targets", e.g. logits) is the
expensive part, compute it once per outer step and take ``m`` cheap steps on a surrogate. For a batch
with outputs ``z(theta)`` (shape ``n x k``) and the user's loss ``l(z)``, outer step ``t`` does::

    z_t   = z(theta_t)                       # detached
    d     = dl/dz at z_t                     # one output-gradient evaluation (n x k)
    eta_t = eta | eta * sqrt(t) | eta * T**(t / T)        # eta_schedule: constant | stochastic | exponential
    s(theta) = mean over the n*k entries of  d * z(theta) / eta_t + (z(theta) - z_t)**2
    repeat m times: theta <- theta - a * grad s(theta)   # a from a stochastic Armijo line search on s

The line search (``LSOpt``): the trial step starts at ``init_step_size`` (10) at every outer step and
is multiplied by ``expand`` before each inner step; it is accepted when
``s(theta - a g) <= s(theta) - c * a * ||g||^2`` and otherwise shrunk by ``beta`` (at most
``max_backtracks`` times, or until ``a < 1e-6``), and the last ``a`` is taken either way. The inner loop
stops early once ``||g|| <= 1e-6``.

Conventions of the official code that this class keeps (they differ from the paper's notation):

* ``eta`` is an *inverse* step size, and the proximity term has no 1/2: in the paper's notation
  ``s = <d, z> + 1/(2 alpha) ||z - z_t||^2`` this is ``alpha = 1 / (2 eta)`` (up to the factor below).
* The surrogate is a *mean* over batch x outputs, so ``grad s(theta_t) = grad_theta l(theta_t) / (eta_t n k)``
  (the proximity term has zero gradient at ``theta_t``); the official code passes a ``reduction='sum'``
  loss, so ``d`` carries no ``1/n``.
* ``expand`` is per inner step; the official ``LSOpt`` uses ``expand_coeff ** (1 / n_batches_per_epoch)``.

Example (multiclass logistic regression; ``forward`` must recompute the outputs on the *same* batch)::

    model = torch.nn.Linear(64, 10)
    opt = SSO(model.parameters(), eta=1.0, inner_steps=10)
    for x, y in loader:
        loss = opt.step(lambda: model(x), lambda z: F.cross_entropy(z, y, reduction="sum"))
    opt.counts["output_grad_evals"]  # one per outer step: the expensive gradients paid for
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from thrifty.optim._core import check_range

__all__ = ["SSO", "surrogate_loss"]

ETA_SCHEDULES = ("constant", "stochastic", "exponential")
_MIN_STEP = 1e-6
_MIN_GRAD_NORM = 1e-6


def surrogate_loss(outputs: Tensor, outputs_t: Tensor, output_grad: Tensor, eta: float) -> Tensor:
    """SSO's surrogate ``mean(output_grad * outputs / eta + (outputs - outputs_t)**2)`` (official form)."""
    return (output_grad * outputs / eta + (outputs - outputs_t).square()).mean()


class SSO(torch.optim.Optimizer):
    """SSO (``SGD_FMDOpt`` of the official code): m Armijo-line-search steps per output gradient.

    Args:
        params: the model's parameters (one param group).
        eta: inverse outer step size (the official ``eta``; configs set ``eta = 1 / 10**log_lr``).
        inner_steps: ``m``, surrogate steps per outer step.
        eta_schedule: ``"constant"``, ``"stochastic"`` (``eta * sqrt(t)``) or ``"exponential"``
            (``eta * T**(t / T)`` with ``T = total_steps``).
        total_steps: ``T`` of the exponential schedule.
        inner_lr: a fixed inner step size instead of the line search (``None``: line search).
        init_step_size: the line search's first trial step, reset at every outer step (official: 10).
        c: Armijo constant (official default 0.1).
        beta: backtracking factor (official ``beta_update`` 0.9).
        expand: factor applied to the step before each inner step (see the module docstring).
        max_backtracks: trial steps per inner step (official: 100).

    ``step(forward, loss_fn)`` takes ``forward()``, which returns the model's outputs on the current
    batch, and ``loss_fn(outputs)``, the batch loss; it returns the loss at the outer step's start.
    ``counts`` holds ``output_grad_evals`` (one per outer step), ``surrogate_grad_evals`` (inner steps)
    and ``surrogate_evals`` (forward-only evaluations of the line search); ``state_dict`` saves them.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        eta: float = 1.0,
        inner_steps: int = 10,
        *,
        eta_schedule: str = "constant",
        total_steps: int = 1000,
        inner_lr: float | None = None,
        init_step_size: float = 10.0,
        c: float = 0.1,
        beta: float = 0.9,
        expand: float = 1.0,
        max_backtracks: int = 100,
    ) -> None:
        check_range("eta", eta, 0.0, low_inclusive=False)
        if not isinstance(inner_steps, int) or inner_steps < 1:
            raise ValueError(f"inner_steps must be an integer in [1, inf), got {inner_steps!r}")
        if eta_schedule not in ETA_SCHEDULES:
            raise ValueError(f"eta_schedule must be one of {', '.join(ETA_SCHEDULES)}, got {eta_schedule!r}")
        if not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps must be an integer in [1, inf), got {total_steps!r}")
        if inner_lr is not None:
            check_range("inner_lr", inner_lr, 0.0, low_inclusive=False)
        check_range("init_step_size", init_step_size, 0.0, low_inclusive=False)
        check_range("c", c, 0.0, 1.0)
        check_range("beta", beta, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        check_range("expand", expand, 1.0)
        if not isinstance(max_backtracks, int) or max_backtracks < 1:
            raise ValueError(f"max_backtracks must be an integer in [1, inf), got {max_backtracks!r}")
        defaults = dict(
            eta=eta,
            inner_steps=inner_steps,
            eta_schedule=eta_schedule,
            total_steps=total_steps,
            inner_lr=inner_lr,
            init_step_size=init_step_size,
            c=c,
            beta=beta,
            expand=expand,
            max_backtracks=max_backtracks,
        )
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError(f"SSO takes one param group, got {len(self.param_groups)}")
        self.counts = {"output_grad_evals": 0, "surrogate_grad_evals": 0, "surrogate_evals": 0}
        self.last_step_size = math.nan

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["counts"] = dict(self.counts)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        counts = state_dict.pop("counts", {})
        super().load_state_dict(state_dict)
        self.counts.update(counts)

    def eta_at(self, t: int) -> float:
        """The inverse step size ``eta_t`` of outer step ``t`` (1-based)."""
        group = self.param_groups[0]
        eta, schedule = group["eta"], group["eta_schedule"]
        if schedule == "stochastic":
            return eta * math.sqrt(t)
        if schedule == "exponential":
            total = group["total_steps"]
            return eta * (1.0 / total) ** (-t / total)
        return eta

    def step(self, forward: Callable[[], Tensor], loss_fn: Callable[[Tensor], Tensor]) -> Tensor:  # type: ignore[override]
        """One outer step: one output gradient, then ``inner_steps`` surrogate steps; returns the loss."""
        group = self.param_groups[0]
        params = [p for p in group["params"] if p.requires_grad]
        with torch.enable_grad():
            outputs = forward()
            outputs_t = outputs.detach()
            target = outputs_t.clone().requires_grad_(True)
            loss = loss_fn(target)
            (output_grad,) = torch.autograd.grad(loss, target)
        self.counts["output_grad_evals"] += 1
        eta = self.eta_at(self.counts["output_grad_evals"])

        def surrogate(first_outputs: Tensor | None = None) -> Tensor:
            return surrogate_loss(forward() if first_outputs is None else first_outputs, outputs_t, output_grad, eta)

        step_size = group["init_step_size"]
        for inner in range(group["inner_steps"]):
            with torch.enable_grad():
                value = surrogate(outputs if inner == 0 else None)
                grads = torch.autograd.grad(value, params, allow_unused=True)
            self.counts["surrogate_grad_evals"] += 1
            grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
            grad_norm_sq = float(sum(g.square().sum() for g in grads))
            with torch.no_grad():
                if group["inner_lr"] is not None:
                    step_size = group["inner_lr"]
                    torch._foreach_add_(params, grads, alpha=-step_size)
                else:
                    step_size = self._line_search(
                        group, params, grads, float(value), grad_norm_sq, step_size, surrogate
                    )
            if math.sqrt(grad_norm_sq) <= _MIN_GRAD_NORM:
                break
        self.last_step_size = step_size
        return loss.detach()

    def _line_search(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        value: float,
        grad_norm_sq: float,
        step_size: float,
        surrogate: Callable[[], Tensor],
    ) -> float:
        """Armijo backtracking from ``expand * step_size``; leaves ``params`` at the taken step."""
        start = [p.detach().clone() for p in params]
        step_size *= group["expand"]
        for _ in range(group["max_backtracks"]):
            torch._foreach_copy_(params, start)
            torch._foreach_add_(params, grads, alpha=-step_size)
            trial = float(surrogate())
            self.counts["surrogate_evals"] += 1
            if trial <= value - step_size * group["c"] * grad_norm_sq:
                return step_size
            step_size *= group["beta"]
            if step_size < _MIN_STEP:
                break
        torch._foreach_copy_(params, start)
        torch._foreach_add_(params, grads, alpha=-step_size)
        return step_size
