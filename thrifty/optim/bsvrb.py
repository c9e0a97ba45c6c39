"""BSVRB: blockwise stochastic variance-reduced multi-block bilevel optimization (the Hessian-vector version, v2).

Paper: "Blockwise Stochastic Variance-Reduced Methods with Parallel Speedup for Multi-Block Bilevel
Optimization", Hu, Qiu, Guo, Zhang and Yang, ICML 2023, arXiv 2305.18730. The problem is

    min_x F(x) = (1/m) sum_i f_i(x, y_i*(x)),   y_i*(x) = argmin_y g_i(x, y)   (g_i strongly convex in y),

whose hypergradient is ``grad F(x) = (1/m) sum_i [grad_x f_i - grad2_xy g_i H_i^{-1} grad_y f_i]`` with
``H_i = grad2_yy g_i`` at ``y_i*(x)``. Each step samples ``I`` of the ``m`` blocks and one mini-batch per sampled
block, and for every sampled block ``i`` updates (``e_t`` is an estimate at the current point, ``e_{t-1}`` the
same mini-batch's estimate at the previous point; unsampled blocks keep their estimators):

    MSVR:  h_i <- (1 - beta) h_i + beta e_t + gamma (e_t - e_{t-1}),   gamma = (m - I) / (I (1 - beta)) + (1 - beta)
    s_i tracks grad_y g_i(x, y_i)               (MSVR)    y_i <- y_i - lr_y s_i
    r_i tracks H_i u_i - grad_y f_i(x, y_i)     (MSVR)    u_i <- Proj(u_i - lr_u r_i)    (u_i -> H_i^{-1} grad_y f_i)
    G_t = (1/I) sum_{i in I_t} [grad_x f_i - grad2_xy g_i u_i]
    z  <- (1 - beta_x) z + beta_x G_t + (1 - beta_x) (G_t - G_{t-1})   (STORM)   x <- x - lr z

``H_i u_i`` and ``grad2_xy g_i u_i`` are Hessian-vector products by double backprop: no Hessian is formed or
inverted (the paper's v2; its v1 tracks the Hessian matrices themselves). With ``I = m`` the MSVR weight
``gamma`` reduces to ``1 - beta``, STORM's. ``variance_reduction=False`` gives the same method with plain moving
averages (``gamma = 0`` everywhere), the baseline the variance reduction is measured against.

Where this follows the authors' code (``quanqihu/BSVRB_ICML2023``, ``Hyperparameter_Optimization/HO/main.py``)
rather than only the abstract: ``y_i`` and ``u_i`` move with the freshly updated trackers; ``u_i`` is projected
onto a ball (``u_bound``, optional here); the upper estimator is STORM with the same sampled blocks and
mini-batches evaluated at the previous point. Their code treats ``gamma`` as a free hyperparameter; the default
here is the paper's formula above, and ``gamma=`` overrides it. Two choices are ours: a block's trackers (and
``z``) start from their first plain estimate instead of random values, and we do not multiply a block's step
by the number of iterations it missed (a detail of their script that the paper's algorithm does not state).

Example (two blocks, both sampled; ``batch_for(i)`` returns the mini-batches ``(f_batch, g_batch)`` of block
``i``, unused by these deterministic objectives; ``y_i*(x) = x``, so ``F(x) = mean_i 0.5 |x - t_i|^2``)::

    x = torch.zeros(3)
    ys = [torch.zeros(3) for _ in range(2)]
    targets = [torch.ones(3), 3 * torch.ones(3)]
    f = [lambda x, y, batch, t=t: 0.5 * (y - t).square().sum() for t in targets]
    g = [lambda x, y, batch: 0.5 * y.square().sum() - y @ x for _ in range(2)]
    opt = BSVRB(x, ys, f, g, lr=0.1, lr_y=0.5, beta=0.5, beta_x=0.5, blocks_per_step=2)
    for _ in range(200):
        opt.step(lambda i: (None, None))   # x -> 2, the minimiser of F
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["BSVRB", "hypergradient_terms", "msvr_gamma", "msvr_update"]

Objective = Callable[[Tensor, Tensor, Any], Tensor]


def msvr_gamma(num_blocks: int, sampled: int, beta: float) -> float:
    """The MSVR correction weight ``(m - I) / (I (1 - beta)) + (1 - beta)``; ``1 - beta`` (STORM) when ``I = m``."""
    if not 1 <= sampled <= num_blocks:
        raise ValueError(f"sampled blocks must be in [1, {num_blocks}], got {sampled}")
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"beta must be in (0, 1], got {beta}")
    if sampled == num_blocks:
        return 1.0 - beta
    if beta == 1.0:
        raise ValueError("beta = 1 with fewer sampled blocks than blocks makes the MSVR weight gamma infinite")
    return (num_blocks - sampled) / (sampled * (1.0 - beta)) + (1.0 - beta)


def msvr_update(h: Tensor, new: Tensor, old: Tensor, beta: float, gamma: float) -> Tensor:
    """``(1 - beta) h + beta new + gamma (new - old)``: the moving average plus the variance-reduction correction."""
    return (1.0 - beta) * h + beta * new + gamma * (new - old)


def hypergradient_terms(
    f: Objective, g: Objective, x: Tensor, y: Tensor, u: Tensor, f_batch: Any, g_batch: Any
) -> tuple[Tensor, Tensor, Tensor]:
    """At one point: ``grad_y g``, ``H u - grad_y f`` and ``grad_x f - grad2_xy g u`` (double backprop, no Hessian)."""
    x = x.detach().requires_grad_(True)
    y = y.detach().requires_grad_(True)
    with torch.enable_grad():
        (gy,) = torch.autograd.grad(g(x, y, g_batch), y, create_graph=True)
        if gy.requires_grad:
            hxu, hyu = torch.autograd.grad(gy, (x, y), grad_outputs=u, allow_unused=True)
        else:
            hxu = hyu = None
        fx, fy = torch.autograd.grad(f(x, y, f_batch), (x, y), allow_unused=True)
    hxu = torch.zeros_like(x) if hxu is None else hxu
    hyu = torch.zeros_like(y) if hyu is None else hyu
    fx = torch.zeros_like(x) if fx is None else fx
    fy = torch.zeros_like(y) if fy is None else fy
    return gy.detach(), (hyu - fy).detach(), (fx - hxu).detach()


class BSVRB:
    """BSVRB v2 on an upper variable ``x`` and per-block lower variables ``ys`` (both updated in place).

    ``f[i](x, y_i, batch)`` and ``g[i](x, y_i, batch)`` are block ``i``'s upper and lower objectives on a
    mini-batch (``g[i]`` strongly convex in ``y_i``). ``lr`` moves ``x``, ``lr_y`` the lower variables, ``lr_u``
    (default ``lr_y``) the Hessian-inverse-vector trackers ``u_i``. ``beta`` is the MSVR weight of the new estimate
    for the block trackers, ``beta_x`` STORM's for the upper estimator; ``gamma`` defaults to :func:`msvr_gamma`.
    ``blocks_per_step`` is ``I``. ``u_bound`` projects each ``u_i`` onto the ball of that radius.

    Why not a ``torch.optim.Optimizer``: one BSVRB step needs, per sampled block, fresh mini-batches of two
    objectives and their gradients, a Hessian-vector product and a cross derivative at the current *and* the
    previous iterate (the variance-reduction terms), and it moves the lower variables as well as ``x``. A
    ``step(closure)`` that returns one loss cannot provide that, so the seam is ``step(batch_for)``: the caller
    says how to draw block ``i``'s batches, and the objectives ``f[i]``, ``g[i]`` are plain functions.
    """

    def __init__(
        self,
        x: Tensor,
        ys: Sequence[Tensor],
        f: Sequence[Objective],
        g: Sequence[Objective],
        *,
        lr: float,
        lr_y: float,
        lr_u: float | None = None,
        beta: float = 0.1,
        beta_x: float = 0.1,
        blocks_per_step: int = 1,
        gamma: float | None = None,
        variance_reduction: bool = True,
        u_bound: float | None = None,
        generator: torch.Generator | None = None,
    ):
        m = len(ys)
        if m == 0 or len(f) != m or len(g) != m:
            raise ValueError(f"need one f and one g per block, got {m} blocks, {len(f)} f and {len(g)} g")
        for name, value in (("lr", lr), ("lr_y", lr_y), ("lr_u", lr_u if lr_u is not None else lr_y)):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if not 0.0 < beta_x <= 1.0:
            raise ValueError(f"beta_x must be in (0, 1], got {beta_x}")
        if u_bound is not None and not u_bound > 0:
            raise ValueError(f"u_bound must be positive, got {u_bound}")
        self.gamma = msvr_gamma(m, blocks_per_step, beta) if gamma is None else float(gamma)
        self.x, self.y, self.f, self.g = x, list(ys), list(f), list(g)
        self.lr, self.lr_y, self.lr_u = lr, lr_y, lr_y if lr_u is None else lr_u
        self.beta, self.beta_x, self.blocks_per_step = beta, beta_x, blocks_per_step
        self.variance_reduction, self.u_bound, self.generator = variance_reduction, u_bound, generator
        self.u = [torch.zeros_like(y) for y in self.y]
        self.s: list[Tensor | None] = [None] * m
        self.r: list[Tensor | None] = [None] * m
        self.z: Tensor | None = None
        self.prev_x = x.detach().clone()
        self.prev_y = [y.detach().clone() for y in self.y]
        self.prev_u = [u.clone() for u in self.u]
        self._moved: list[int] = []
        self.steps = 0

    @property
    def num_blocks(self) -> int:
        return len(self.y)

    def sample_blocks(self) -> list[int]:
        """``I`` distinct blocks, uniformly at random."""
        return torch.randperm(self.num_blocks, generator=self.generator)[: self.blocks_per_step].tolist()

    def step(self, batch_for: Callable[[int], tuple[Any, Any]], blocks: Sequence[int] | None = None) -> Tensor:
        """One iteration on ``blocks`` (default: :meth:`sample_blocks`); ``batch_for(i)`` gives block ``i``'s
        ``(f_batch, g_batch)``. Returns the hypergradient estimate ``z`` that moved ``x``."""
        blocks = self.sample_blocks() if blocks is None else list(blocks)
        if len(blocks) != self.blocks_per_step or len(set(blocks)) != len(blocks):
            raise ValueError(f"need {self.blocks_per_step} distinct blocks, got {blocks}")
        corrected = self.variance_reduction and self.steps > 0
        g_new = torch.zeros_like(self.x)
        g_old = torch.zeros_like(self.x)
        for i in blocks:
            f_batch, g_batch = batch_for(i)
            gy, res, hyper = hypergradient_terms(self.f[i], self.g[i], self.x, self.y[i], self.u[i], f_batch, g_batch)
            g_new += hyper
            first = self.s[i] is None
            if corrected:
                gy_old, res_old, hyper_old = hypergradient_terms(
                    self.f[i], self.g[i], self.prev_x, self.prev_y[i], self.prev_u[i], f_batch, g_batch
                )
                g_old += hyper_old
            if first:
                self.s[i], self.r[i] = gy, res
            elif corrected:
                self.s[i] = msvr_update(self.s[i], gy, gy_old, self.beta, self.gamma)
                self.r[i] = msvr_update(self.r[i], res, res_old, self.beta, self.gamma)
            else:
                self.s[i] = msvr_update(self.s[i], gy, gy, self.beta, 0.0)
                self.r[i] = msvr_update(self.r[i], res, res, self.beta, 0.0)
        estimate, estimate_old = g_new / len(blocks), g_old / len(blocks)
        if self.z is None:
            self.z = estimate
        elif corrected:
            self.z = msvr_update(self.z, estimate, estimate_old, self.beta_x, 1.0 - self.beta_x)
        else:
            self.z = msvr_update(self.z, estimate, estimate, self.beta_x, 0.0)
        with torch.no_grad():
            # The previous point of the next step is this step's starting point, for every block that moves now or
            # moved in the last step (the others' previous and current values already agree).
            for j in set(self._moved) | set(blocks):
                self.prev_y[j].copy_(self.y[j])
                self.prev_u[j].copy_(self.u[j])
            self.prev_x.copy_(self.x)
            for i in blocks:
                self.y[i].sub_(self.lr_y * self.s[i])
                u = self.u[i] - self.lr_u * self.r[i]
                if self.u_bound is not None:
                    u = u * min(1.0, self.u_bound / max(float(u.norm()), 1e-30))
                self.u[i].copy_(u)
            self.x.sub_(self.lr * self.z)
        self._moved = blocks
        self.steps += 1
        return self.z.clone()
