"""A learning-rate and momentum learner from the extreme eigenvalues of the mini-batch Hessian.

"Learning Rates as a Function of Batch Size: A Random Matrix Theory Approach to Neural Network
Training" (Granziol, Zohren, Roberts, arXiv 2006.09092) closes with an on-the-fly learner: every few
steps, Lanczos iterations with Hessian-vector products on the current batch estimate the extreme
eigenvalues ``lambda_max`` and ``lambda_min`` of the batch Hessian, and the learning rate and momentum
are set from them. For heavy-ball momentum the rule is Polyak's optimum for a quadratic with that
spectrum (every mode then contracts at the same rate):

    lr       = 4 / (sqrt(lambda_max) + sqrt(lambda_min)) ** 2
    momentum = ((sqrt(kappa) - 1) / (sqrt(kappa) + 1)) ** 2,     kappa = lambda_max / lambda_min

and without momentum the gradient-descent optimum ``lr = 2 / (lambda_max + lambda_min)``. A network's
batch Hessian is indefinite and nearly singular, so ``lambda_min`` is floored at
``lambda_max / max_condition`` (our choice: it caps the momentum, 0.67 for the default 100). Polyak's rates
sit at the edge of stability for ``lambda_max``, and on a network the curvature grows between estimates
(progressive sharpening) and the batch gradient is noisy, so the learning rate is multiplied by
``scale`` (default 1/4, our choice, picked once on the digits MLP during development: 1 and 1/2
diverged or trained poorly there). The paper gives no code and its text was not available to check its
exact constants, so this follows Polyak's classical heavy-ball optimum.

Lanczos keeps every basis vector and re-orthogonalises against all of them (twice), so with ``n``
iterations on an ``n``-dimensional problem its Ritz values are the exact spectrum up to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["LanczosLR", "hessian_eigenvalues", "hvp_operator", "lanczos"]


def lanczos(matvec: Callable[[Tensor], Tensor], v0: Tensor, iters: int, tol: float = 1e-10) -> Tensor:
    """Ritz values (ascending) of a symmetric operator after ``iters`` Lanczos steps from ``v0``.

    Stops early when the Krylov space is invariant (the next residual is below ``tol`` times the
    operator's observed scale), in which case the Ritz values are exact eigenvalues.
    """
    if iters < 1:
        raise ValueError(f"iters must be at least 1, got {iters}")
    if v0.ndim != 1 or not torch.isfinite(v0).all() or float(v0.norm()) == 0.0:
        raise ValueError("v0 must be a finite, non-zero 1-D tensor")
    iters = min(iters, v0.numel())
    basis = [v0 / v0.norm()]
    alphas: list[Tensor] = []
    betas: list[Tensor] = []
    scale = 0.0
    for j in range(iters):
        q = basis[-1]
        w = matvec(q)
        alpha = torch.dot(w, q)
        alphas.append(alpha)
        w = w - alpha * q - (betas[-1] * basis[-2] if betas else 0.0)
        stacked = torch.stack(basis)
        for _ in range(2):  # full re-orthogonalisation, twice ("twice is enough")
            w = w - stacked.T @ (stacked @ w)
        beta = w.norm()
        scale = max(scale, abs(float(alpha)), float(beta))
        if j == iters - 1 or float(beta) <= tol * max(scale, 1e-300):
            break
        betas.append(beta)
        basis.append(w / beta)
    diag = torch.stack(alphas)
    tri = torch.diag(diag)
    if betas:
        off = torch.stack(betas)
        tri = tri + torch.diag(off, 1) + torch.diag(off, -1)
    return torch.linalg.eigvalsh(tri)


def hvp_operator(loss: Tensor, params: Sequence[Tensor]) -> Callable[[Tensor], Tensor]:
    """``v -> H v`` for the Hessian of ``loss`` in ``params`` (flattened), by double backprop."""
    params = list(params)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    sizes = [p.numel() for p in params]

    def matvec(v: Tensor) -> Tensor:
        parts = torch.split(v, sizes)
        # A gradient that does not depend on the parameters (a loss linear in them) has zero Hessian.
        pairs = [(g, u.view_as(g)) for g, u in zip(grads, parts, strict=True) if g.requires_grad]
        if not pairs:
            return torch.zeros_like(v)
        dot = sum((g * u).sum() for g, u in pairs)
        hv = torch.autograd.grad(dot, params, retain_graph=True, allow_unused=True)
        zero = torch.zeros_like
        return torch.cat([(h if h is not None else zero(p)).reshape(-1) for h, p in zip(hv, params, strict=True)])

    return matvec


def hessian_eigenvalues(
    loss: Tensor, params: Sequence[Tensor], iters: int = 20, generator: torch.Generator | None = None
) -> Tensor:
    """Lanczos Ritz values (ascending) of the Hessian of ``loss`` in ``params``; the ends estimate its extremes."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("no parameter requires a gradient")
    dim = sum(p.numel() for p in params)
    v0 = torch.randn(dim, generator=generator, dtype=params[0].dtype).to(params[0].device)
    return lanczos(hvp_operator(loss, params), v0, iters)


class LanczosLR(torch.optim.lr_scheduler.LRScheduler):
    """Set the optimizer's learning rate (and heavy-ball momentum) from Lanczos estimates every ``every`` steps.

    A ``torch.optim.lr_scheduler.LRScheduler`` (``get_last_lr()``, ``state_dict()``), whose ``step`` takes the
    closure that its Hessian-vector products need, the way ``Optimizer.step(closure)`` does for LBFGS.

    Call ``sched.step(closure)`` once per training step, before ``optimizer.step()``; ``closure()``
    returns the loss of the current batch as a differentiable tensor (it is only evaluated on the
    steps that re-estimate)::

        sched = LanczosLR(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), every=50)
        for x, y in batches:
            sched.step(lambda: F.cross_entropy(model(x), y))
            opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()

    ``momentum=True`` writes the ``momentum`` of SGD-style param groups (Polyak's rule), ``False``
    leaves it alone and uses ``lr = 2 / (lambda_max + lambda_min)``; both learning rates are multiplied by
    ``scale`` (``scale=1`` gives the exact quadratic optima). ``history`` records every estimate.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        every: int = 50,
        iters: int = 20,
        momentum: bool = True,
        max_condition: float = 100.0,
        scale: float = 0.25,
        seed: int = 0,
    ):
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        if iters < 2:
            raise ValueError(f"iters must be at least 2, got {iters}")
        if not max_condition > 1.0:
            raise ValueError(f"max_condition must be > 1, got {max_condition}")
        if not 0.0 < scale <= 1.0:
            raise ValueError(f"scale must be in (0, 1], got {scale}")
        if momentum and any("momentum" not in g for g in optimizer.param_groups):
            raise ValueError("momentum=True needs an optimizer with a 'momentum' hyperparameter (e.g. SGD)")
        self.every, self.iters, self.momentum = every, iters, momentum
        self.max_condition, self.scale = max_condition, scale
        self.generator = torch.Generator().manual_seed(seed)
        self.steps = 0
        self.history: list[dict[str, float]] = []
        super().__init__(optimizer)

    def rates(self, lambda_max: float, lambda_min: float) -> tuple[float, float]:
        """``(lr, momentum)`` for the given extreme eigenvalues (``lambda_max > 0``), momentum 0 without it."""
        low = max(lambda_min, lambda_max / self.max_condition)
        if not self.momentum:
            return self.scale * 2.0 / (lambda_max + low), 0.0
        root_kappa = math.sqrt(lambda_max / low)
        lr = 4.0 / (math.sqrt(lambda_max) + math.sqrt(low)) ** 2
        return self.scale * lr, ((root_kappa - 1) / (root_kappa + 1)) ** 2

    def get_lr(self) -> list[float]:
        """The rates now in the param groups (LanczosLR writes them in ``step``)."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def step(self, closure: Callable[[], Tensor] | None = None) -> None:  # type: ignore[override]
        """Count a training step; on every ``every``-th (the first included) re-estimate and set the rates.

        ``LRScheduler.__init__`` calls ``step()`` once without a closure; that call only records the rates.
        """
        if closure is None:
            if getattr(self, "_step_count", 0) > 0:
                raise TypeError("LanczosLR.step needs closure(): the current batch's loss, for Hessian-vector products")
            self._step_count = 1
            self._last_lr = self.get_lr()
            return
        if self.steps % self.every == 0:
            params = [p for g in self.optimizer.param_groups for p in g["params"] if p.requires_grad]
            ritz = hessian_eigenvalues(closure(), params, self.iters, self.generator)
            lambda_max, lambda_min = float(ritz[-1]), float(ritz[0])
            if math.isfinite(lambda_max) and lambda_max > 0:
                lr, beta = self.rates(lambda_max, lambda_min)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                    if self.momentum:
                        group["momentum"] = beta
                self.history.append(
                    {"step": self.steps, "lambda_max": lambda_max, "lambda_min": lambda_min, "lr": lr, "momentum": beta}
                )
        self.steps += 1
        self.last_epoch = self.steps
        self._step_count += 1
        self._last_lr = self.get_lr()

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "history": list(self.history),
            "generator": self.generator.get_state(),
            "last_lr": list(self._last_lr),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = self.last_epoch = state["steps"]
        self.history = list(state["history"])
        self.generator.set_state(state["generator"])
        self._last_lr = list(state.get("last_lr", self.get_lr()))
