"""SOAP: Adam run in the eigenbasis of Shampoo's preconditioner.

Paper: Vyas, Morwani, Zhao, Kwun, Shapira, Brandfonbrener, Janson, Kakade, "SOAP: Improving and
Stabilizing Shampoo using Adam", arXiv:2409.11321. Official code: github.com/nikhilvyas/SOAP,
``soap.py`` (commit a1e5535). Constructor arguments, defaults and numerics follow that file, so a
script written for the official class runs unchanged and follows the same trajectory;
``tests/optim/fixtures/soap_official.json`` holds trajectories made by running it.

For a matrix parameter ``W`` with gradient ``G`` (``k`` counts Adam steps; tensors of higher order get
one factor per dimension, dimensions larger than ``max_precond_dim`` and 1-D parameters get ``Q = I``)::

    G' = Q_Lᵀ G Q_R
    m ← β1 m + (1-β1) G',   v ← β2 v + (1-β2) G'²                (both kept in the rotated basis)
    W ← W - lr · sqrt(1-β2^k)/(1-β1^k) · Q_L (m / (sqrt(v) + ε)) Q_Rᵀ
    W ← W - lr · λ · W
    L ← β_s L + (1-β_s) G Gᵀ,   R ← β_s R + (1-β_s) Gᵀ G         (β_s = β2 unless shampoo_beta >= 0)
    every f-th k:  Q ← qr(L · Q[:, σ]), σ sorting diag(Qᵀ L Q) in descending order; v permuted by σ;
                   m rotated back with the old Q and forward with the new one.

Details taken from the official code (the paper's abstract and algorithm do not pin them down):

* The first call per parameter only accumulates ``L``, ``R`` and sets ``Q`` by ``eigh`` (descending
  eigenvalues); it does not move the parameter, so ``k`` lags the call count by one. The factors
  are updated after the parameter update, so a gradient never appears in its own projection.
* The refresh is one warm-started power-iteration step plus QR, not a fresh ``eigh``; ``v`` is
  permuted to the new column order but not rotated.
* ``ε`` is added outside the square root of the uncorrected ``v``; bias correction is folded into
  the step size. Weight decay is decoupled and applied after the update (torch's AdamW applies
  it before).
* ``eigh`` and QR run in float32 (float64 parameters: ``eigh`` in float64, QR in float32, as the
  official code does under ``torch.set_default_dtype(torch.float64)``), on ``L + 1e-30·I``, with a
  float64 retry if ``eigh`` fails.
* ``merge_dims`` reshapes a tensor by merging adjacent dims while their product stays within
  ``max_precond_dim``; ``data_format="channels_last"`` first permutes 4-D tensors from NHWC to NCHW.
  ``normalize_grads`` rescales each rotated-back update to unit RMS.

Where this module departs from the official code (none of these changes the math):

* ``m`` lives in the rotated basis (official code since commit f42d296; earlier versions kept it
  in the original basis, which is the same in exact arithmetic). The official code rotates it
  back and forth after every step; this module does so only when ``Q`` changes, since the round
  trip through an unchanged orthogonal ``Q`` is the identity up to rounding. This saves four of the
  ten matrix products per step.
* ``L`` and ``R`` are kept in the parameter's dtype (the official code uses the default dtype and
  fails for any other). ``shampoo_beta`` and ``precondition_frequency`` are read from the param
  group at every step (the official code freezes them at the first step), and ``data_format`` is
  a param-group option.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from itertools import chain
from typing import Any

import torch
from torch import Tensor

from thrifty.optim._core import ThriftyOptimizer, adam_moments_, check_betas, check_range, foreach_adam_moments_

__all__ = ["SOAP"]

_DATA_FORMATS = ("channels_first", "channels_last")


def _merge_dims(x: Tensor, max_precond_dim: float, data_format: str) -> Tensor:
    """Merge adjacent dims while their product stays <= max_precond_dim (the official rule)."""
    if data_format == "channels_last" and x.dim() == 4:
        x = x.permute(0, 3, 1, 2)
    new_shape: list[int] = []
    current = 1
    for size in x.shape:
        if current * size > max_precond_dim:
            if current > 1:
                new_shape.append(current)
                current = size
            else:
                new_shape.append(size)
                current = 1
        else:
            current *= size
    if current > 1 or not new_shape:
        new_shape.append(current)
    return x.reshape(new_shape)


def _precond_view(x: Tensor, group: dict[str, Any]) -> Tensor:
    """The tensor whose dims carry the Kronecker factors (merged, for ``merge_dims``)."""
    if group["merge_dims"]:
        return _merge_dims(x, group["max_precond_dim"], group["data_format"])
    return x


def _restore_shape(y: Tensor, shape: torch.Size, group: dict[str, Any]) -> Tensor:
    """Undo ``_precond_view`` for a tensor of the parameter's original ``shape``."""
    if not group["merge_dims"]:
        return y
    if group["data_format"] == "channels_last" and len(shape) == 4:
        n, h, w, c = shape
        return y.reshape(n, c, h, w).permute(0, 2, 3, 1)
    return y.reshape(shape)


def _rotate(x: Tensor, qs: list[Tensor | None], group: dict[str, Any], back: bool) -> Tensor:
    """``Q_Lᵀ X Q_R`` (into the eigenbasis) or, with ``back``, ``Q_L X Q_Rᵀ``; ``None`` factors are identity.

    Each step contracts the leading dim and appends the result as the last dim, so after all factors
    the dims are back in their original order (the official code's tensordot scheme, kept for its
    bit-for-bit results).
    """
    y = _precond_view(x, group)
    contract = 1 if back else 0
    for q in qs:
        if isinstance(q, Tensor):
            y = torch.tensordot(y, q, dims=[[0], [contract]])
        else:
            y = y.permute(*range(1, y.dim()), 0)
    return _restore_shape(y, x.shape, group)


def _eigenbasis(gg: Tensor) -> Tensor:
    """Eigenvectors of a factor, largest eigenvalue first, computed as the official code does."""
    m = gg.float()
    solve_dtype = torch.float64 if gg.dtype == torch.float64 else torch.float32
    eye = torch.eye(m.shape[0], device=m.device, dtype=solve_dtype)
    try:
        q = torch.linalg.eigh(m + 1e-30 * eye).eigenvectors
    except RuntimeError:
        q = torch.linalg.eigh(m.double() + 1e-30 * eye).eigenvectors.float()
    return torch.flip(q, [1]).to(gg.dtype)


def _step_size(group: dict[str, Any], step: int) -> float:
    """lr with Adam's bias corrections folded in (same float operations as the official code)."""
    step_size = group["lr"]
    if group["correct_bias"]:
        beta1, beta2 = group["betas"]
        step_size = step_size * (1.0 - beta2**step) ** 0.5 / (1.0 - beta1**step)
    return step_size


def _normalized(update: Tensor) -> Tensor:
    return update / (1e-30 + torch.mean(update**2) ** 0.5)


class SOAP(ThriftyOptimizer):
    """SOAP (arXiv:2409.11321): Adam in the slowly refreshed eigenbasis of Shampoo's factors.

    Arguments match the official ``SOAP`` class. A negative ``shampoo_beta`` (the default -1) uses
    ``betas[1]`` for the factors' moving average. ``max_precond_dim=0`` turns every rotation into
    the identity, which leaves AdamW with weight decay after the update and a one-step offset.
    ``foreach=None`` picks the multi-tensor path for the elementwise Adam part whenever possible.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 3e-3,
        betas: tuple[float, float] = (0.95, 0.95),
        shampoo_beta: float = -1,
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        precondition_frequency: int = 10,
        max_precond_dim: int = 10000,
        merge_dims: bool = False,
        precondition_1d: bool = False,
        normalize_grads: bool = False,
        data_format: str = "channels_first",
        correct_bias: bool = True,
        *,
        foreach: bool | None = None,
    ) -> None:
        check_range("lr", lr, 0.0)
        betas = check_betas(betas)
        check_range("shampoo_beta", shampoo_beta, -1.0, 1.0, high_inclusive=False)
        check_range("eps", eps, 0.0)
        check_range("weight_decay", weight_decay, 0.0)
        if (
            isinstance(precondition_frequency, bool)
            or not isinstance(precondition_frequency, numbers.Integral)
            or precondition_frequency < 1
        ):
            got = repr(precondition_frequency)
            raise ValueError(f"precondition_frequency must be an integer >= 1, got {got}")
        check_range("max_precond_dim", max_precond_dim, 0.0)
        if data_format not in _DATA_FORMATS:
            raise ValueError(f"data_format must be one of {_DATA_FORMATS}, got {data_format!r}")
        defaults = {
            "lr": lr,
            "betas": betas,
            "shampoo_beta": shampoo_beta,
            "eps": eps,
            "weight_decay": weight_decay,
            "precondition_frequency": precondition_frequency,
            "max_precond_dim": max_precond_dim,
            "merge_dims": merge_dims,
            "precondition_1d": precondition_1d,
            "normalize_grads": normalize_grads,
            "data_format": data_format,
            "correct_bias": correct_bias,
            "foreach": foreach,
        }
        super().__init__(params, defaults)

    def project(self, tensor: Tensor, param: Tensor) -> Tensor:
        """Rotate a tensor shaped like ``param`` into the eigenbasis of its preconditioner."""
        group, state = self._group_and_state(param)
        return _rotate(tensor, state["Q"], group, back=False)

    def project_back(self, tensor: Tensor, param: Tensor) -> Tensor:
        """Rotate a tensor from ``param``'s eigenbasis back to the parameter's coordinates."""
        group, state = self._group_and_state(param)
        return _rotate(tensor, state["Q"], group, back=True)

    def _group_and_state(self, param: Tensor) -> tuple[dict[str, Any], dict[str, Any]]:
        state = self.state[param]
        if "Q" not in state:
            raise RuntimeError("this parameter has no preconditioner yet: it is built by its first step()")
        group = next(g for g in self.param_groups if any(p is param for p in g["params"]))
        return group, state

    def _step_group(self, group: dict[str, Any], params: list[Tensor], use_foreach: bool) -> None:
        active = []
        for p in params:
            if "Q" in self.state[p]:
                active.append(p)
            else:
                self._init_state(group, p)
        if not active:
            return
        if use_foreach:
            self._multi_tensor_update(group, active)
        else:
            for p in active:
                self._single_tensor_update(group, p)
        for p in active:
            self._update_preconditioner(group, self.state[p], p.grad)

    def _init_state(self, group: dict[str, Any], p: Tensor) -> None:
        """First step of a parameter: zero moments, factors from this gradient, Q by eigh; no update."""
        grad = p.grad
        state = self.state[p]
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(grad)
        state["exp_avg_sq"] = torch.zeros_like(grad)
        shape = _precond_view(grad, group).shape
        limit = group["max_precond_dim"]
        if len(shape) == 1:
            keep = [group["precondition_1d"] and shape[0] <= limit]
        else:
            keep = [size <= limit for size in shape]
        state["GG"] = [
            torch.zeros(size, size, dtype=grad.dtype, device=grad.device) if k else None
            for size, k in zip(shape, keep, strict=True)
        ]
        self._accumulate_factors(group, state, grad)
        state["Q"] = [_eigenbasis(gg) if isinstance(gg, Tensor) else None for gg in state["GG"]]

    def _single_tensor_update(self, group: dict[str, Any], p: Tensor) -> None:
        """Reference path: one parameter, line by line as in the official step."""
        state = self.state[p]
        beta1, beta2 = group["betas"]
        grad_projected = _rotate(p.grad, state["Q"], group, back=False)
        state["step"] += 1
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        adam_moments_(exp_avg, exp_avg_sq, grad_projected, beta1, beta2, lerp=False)
        denom = exp_avg_sq.sqrt().add_(group["eps"])
        update = _rotate(exp_avg / denom, state["Q"], group, back=True)
        if group["normalize_grads"]:
            update = _normalized(update)
        p.add_(update, alpha=-_step_size(group, state["step"]))
        if group["weight_decay"] > 0.0:
            p.add_(p, alpha=-group["lr"] * group["weight_decay"])

    def _multi_tensor_update(self, group: dict[str, Any], params: list[Tensor]) -> None:
        """The same math with the elementwise Adam part and weight decay as ``torch._foreach_*`` calls."""
        states = [self.state[p] for p in params]
        beta1, beta2 = group["betas"]
        projected = [_rotate(p.grad, s["Q"], group, back=False) for p, s in zip(params, states, strict=True)]
        for s in states:
            s["step"] += 1
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        foreach_adam_moments_(exp_avgs, exp_avg_sqs, projected, beta1, beta2, lerp=False)
        del projected
        denoms = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(denoms, group["eps"])
        ratios = torch._foreach_div(exp_avgs, denoms)
        del denoms
        updates = [_rotate(r, s["Q"], group, back=True) for r, s in zip(ratios, states, strict=True)]
        del ratios
        if group["normalize_grads"]:
            updates = [_normalized(u) for u in updates]
        # Parameters that skipped steps have other bias corrections; add_ with alpha keeps the bits
        # of the reference path, which a multiply-then-add would not.
        by_step_size: dict[float, tuple[list[Tensor], list[Tensor]]] = {}
        for p, s, u in zip(params, states, updates, strict=True):
            ps, us = by_step_size.setdefault(_step_size(group, s["step"]), ([], []))
            ps.append(p)
            us.append(u)
        for step_size, (ps, us) in by_step_size.items():
            torch._foreach_add_(ps, us, alpha=-step_size)
        if group["weight_decay"] > 0.0:
            torch._foreach_add_(params, params, alpha=-group["lr"] * group["weight_decay"])

    @staticmethod
    def _accumulate_factors(group: dict[str, Any], state: dict[str, Any], grad: Tensor) -> None:
        """Moving averages of G Gᵀ and Gᵀ G (one contraction per preconditioned dim)."""
        beta = group["shampoo_beta"] if group["shampoo_beta"] >= 0 else group["betas"][1]
        g = _precond_view(grad, group)
        for idx, gg in enumerate(state["GG"]):
            if isinstance(gg, Tensor):
                others = [*chain(range(idx), range(idx + 1, g.dim()))]
                gg.lerp_(torch.tensordot(g, g, dims=[others, others]), 1 - beta)

    def _update_preconditioner(self, group: dict[str, Any], state: dict[str, Any], grad: Tensor) -> None:
        """After the update: fold the current gradient into the factors; refresh Q every f-th step."""
        if not any(isinstance(gg, Tensor) for gg in state["GG"]):
            return
        self._accumulate_factors(group, state, grad)
        if state["step"] % group["precondition_frequency"] == 0:
            exp_avg = _rotate(state["exp_avg"], state["Q"], group, back=True)
            self._refresh_eigenbasis(group, state)
            state["exp_avg"] = _rotate(exp_avg, state["Q"], group, back=False)

    @staticmethod
    def _refresh_eigenbasis(group: dict[str, Any], state: dict[str, Any]) -> None:
        """One power-iteration step + QR per factor, columns sorted by estimated eigenvalue.

        ``exp_avg_sq`` follows the column permutation, so each entry keeps the direction it was
        estimated in. Computed in float32 with the official code's expressions (including the
        O(n³) ``diag(Qᵀ L Q)``), so the sort order agrees with it where eigenvalues nearly tie.
        """
        exp_avg_sq = _precond_view(state["exp_avg_sq"], group)
        new_qs: list[Tensor | None] = []
        for dim, (gg, q) in enumerate(zip(state["GG"], state["Q"], strict=True)):
            if not isinstance(gg, Tensor):
                new_qs.append(None)
                continue
            m, o = gg.float(), q.float()
            order = torch.argsort(torch.diag(o.T @ m @ o), descending=True)
            exp_avg_sq = exp_avg_sq.index_select(dim, order)
            new_qs.append(torch.linalg.qr(m @ o[:, order]).Q.to(gg.dtype))
        state["exp_avg_sq"] = _restore_shape(exp_avg_sq, state["exp_avg_sq"].shape, group)
        state["Q"] = new_qs
