"""FRUGAL: AdamW on a low-dimensional slice of the gradient, a state-free rule on the rest.

Paper: P. Zmushko, A. Beznosikov, M. Takáč, S. Horváth, "FRUGAL: Memory-Efficient Optimization by
Reducing State Overhead for Scalable Training", arXiv:2411.07837. Read against the code of the
fork ``hungquangbui02022003/FRUGAL`` (``frugal/proj_optimizer_templates.py``, ``galore_projector.py``,
``adamw.py``; the authors' repository was not available here).

For a projectable weight ``W`` with gradient ``G`` at step ``t`` (``lr`` is the group's current rate)::

    every update_gap steps:  P <- basis of an r-dimensional subspace (see proj_type);
                             the AdamW moments (and their step count) start again from zero
    W  = W * (1 - lr * weight_decay)                  # decoupled, on every parameter, first
    L  = down(G)                                      # G P^T (right side) or P^T G (left side)
    W -= lr_a * up(AdamW_direction(L))                # lr_a = lr * proj_params_lr_scale
    R  = G - up(L)                                    # the residual, orthogonal to the subspace
    W -= lr_a * inactive_lr_scale * sign(R)           # or R ("sgd"), or nothing ("no": GaLore)

``proj_type`` picks the subspace: ``"svd"`` the top-r singular vectors of ``G`` (GaLore), ``"random"``
a random orthonormal basis, ``"block"`` whole tensors (BAdam): ``round(density * n)`` of the ``n``
projectable tensors of a group are state-full (drawn at random every ``update_gap`` steps), the
others take the state-free rule on their full gradient. With ``proj_side="std"`` an ``m x n``
weight is projected on its smaller side: ``r = round(density * min(m, n))`` and the moments are
``max(m, n) x r``. Parameters that are not projectable (embeddings, norms, biases, the output head)
get plain AdamW, whose arithmetic is exactly ``torch.optim.AdamW``'s (``eps`` added to
``sqrt(v) / sqrt(1 - beta2**t)``, step size ``lr / (1 - beta1**t)``, weight decay before the update).

Which parameters are projectable: a group's ``projectable`` option (``True``/``False``) decides for
the whole group (the official code calls it ``is_proj_params``); ``None``, the constructor's default,
decides per tensor: every 2-D tensor is projectable. That shape rule is what a model passed through
``create_optimizer`` gets, and it also projects 2-D embeddings and an untied output head, which the
paper keeps on AdamW; ``frugal_param_groups(model)`` gives the paper's choice (Linear weights only,
the head excluded by name).

Where this follows the official code: weight decay multiplies every parameter, state-free ones
included, before the update; the state-free rate is scaled by ``proj_params_lr_scale`` as well as
``inactive_lr_scale``; the subspace is computed from the gradient of the step that refreshes it;
SVDs run in float32. Where it differs, so that the subspace-reset rule is exact: at ``r`` equal to
the full side (``density=1``) the identity basis is used and nothing is reset (the official code
rotates into the SVD basis, where elementwise Adam is not AdamW); in block mode a tensor that stays
state-full across a re-draw keeps its moments (the official code clears them all). So ``density=1``
with ``inactive_update_rule="no"`` is ``torch.optim.AdamW`` step for step, in every mode.
Random draws (bases and blocks) use a generator per group whose state lives in the param group,
so ``state_dict`` round trips resume bit-identically. There is no multi-tensor path: the
per-tensor projections dominate the cost.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from thrifty.optim._core import ThriftyOptimizer, adam_moments_, check_betas, check_range

__all__ = ["FRUGAL", "frugal_param_groups", "project_down", "project_up"]

PROJ_TYPES = ("svd", "random", "block")
PROJ_SIDES = ("std", "reverse_std", "left", "right")
INACTIVE_RULES = ("sign_sgd", "sgd", "no")


def project_down(x: Tensor, projection: Tensor, side: str) -> Tensor:
    """Coordinates of ``x`` in the subspace: ``x P^T`` for a right basis (r x n), ``P^T x`` for a left one (m x r)."""
    return x @ projection.T if side == "right" else projection.T @ x


def project_up(x: Tensor, projection: Tensor, side: str) -> Tensor:
    """The full-size matrix with subspace coordinates ``x``: ``x P`` (right) or ``P x`` (left)."""
    return x @ projection if side == "right" else projection @ x


def _side(shape: Sequence[int], proj_side: str) -> str:
    """The side that ``proj_side`` picks for a matrix of ``shape`` (as ``GaLoreProjector``)."""
    m, n = shape
    if proj_side == "std":
        return "right" if m >= n else "left"
    if proj_side == "reverse_std":
        return "left" if m >= n else "right"
    return proj_side


def _rank(shape: Sequence[int], side: str, density: float) -> int:
    return round((shape[1] if side == "right" else shape[0]) * density)


def frugal_param_groups(
    model: nn.Module, exclude: Iterable[str] = ("head", "lm_head", "classifier")
) -> list[dict[str, Any]]:
    """Two param groups: ``nn.Linear`` weights (``projectable=True``) and everything else (``False``).

    A Linear whose module name has a dot-separated component in ``exclude`` (the output head by
    default) stays on AdamW, as do embeddings, norms and biases: the paper's split. A weight
    shared with an excluded module (a tied head) is excluded too.
    """
    excluded = set(exclude)
    linear, kept_out = [], set()
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.weight.requires_grad:
            if excluded.intersection(name.split(".")):
                kept_out.add(id(module.weight))
            else:
                linear.append(module.weight)
    projectable, seen = [], set(kept_out)
    for p in linear:
        if id(p) not in seen:
            seen.add(id(p))
            projectable.append(p)
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in {id(q) for q in projectable}]
    return [{"params": projectable, "projectable": True}, {"params": rest, "projectable": False}]


class FRUGAL(ThriftyOptimizer):
    """FRUGAL with AdamW as the state-full optimizer; keyword names and defaults as the official
    ``GaloreAdamW`` / ``BlockAdamW`` (``proj_type="block"`` selects the latter).

    Args:
        params: parameters or param-group dicts; a group may set ``projectable`` and any option below.
        lr, betas, eps, weight_decay: AdamW's (decoupled weight decay, applied to every parameter).
        density: rho, the state-full fraction: of the projected side's dimension, or of the tensors
            in block mode. 0 makes every projectable tensor state-free, 1 makes FRUGAL AdamW.
        update_gap: T, steps between subspace refreshes; the moments restart at each refresh.
        proj_type: ``"svd"``, ``"random"`` or ``"block"``.
        proj_side: ``"std"`` (project the smaller side), ``"reverse_std"``, ``"left"`` or ``"right"``.
        inactive_update_rule: ``"sign_sgd"``, ``"sgd"`` or ``"no"`` (GaLore/BAdam: no state-free update).
        inactive_lr_scale: multiplies the state-free rate (official: 1.0 pre-training, 0.1 fine-tuning).
        proj_params_lr_scale: multiplies both rates of projectable parameters.
        reset_statistics: zero the moments when the subspace changes (the official default); with
            ``False`` they carry over (GaLore's original behaviour; not used in block mode).
        projectable: the default of groups that do not set it; ``None`` projects every 2-D tensor.
        seed: seeds the random bases and block draws; ``None`` draws a seed from torch's global RNG.

    State: non-projectable tensors ``step``, ``exp_avg``, ``exp_avg_sq`` (full size); projected tensors
    ``step`` (steps since the last reset), ``projection`` (absent at full rank) and the moments in
    subspace coordinates (nothing at r = 0); block tensors ``active`` and, while active, ``step`` and the
    full-size moments (inactive ones hold nothing but ``active``). Each group keeps ``step`` (its step
    count), ``seed`` and, for random draws, ``rng_state``.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        *,
        density: float = 0.25,
        update_gap: int = 200,
        proj_type: str = "svd",
        proj_side: str = "std",
        inactive_update_rule: str = "sign_sgd",
        inactive_lr_scale: float = 1.0,
        proj_params_lr_scale: float = 1.0,
        reset_statistics: bool = True,
        projectable: bool | None = None,
        seed: int | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            density=density,
            update_gap=update_gap,
            proj_type=proj_type,
            proj_side=proj_side,
            inactive_update_rule=inactive_update_rule,
            inactive_lr_scale=inactive_lr_scale,
            proj_params_lr_scale=proj_params_lr_scale,
            reset_statistics=reset_statistics,
            projectable=projectable,
            seed=int(torch.randint(2**62, (1,))) if seed is None else seed,
        )
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group, validating its options; groups with random draws get their own generator state."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        _check_group(group)
        group.setdefault("step", 0)
        if group["proj_type"] in ("random", "block") and "rng_state" not in group:
            seed = group["seed"] + len(self.param_groups) - 1
            group["rng_state"] = torch.Generator().manual_seed(seed).get_state()

    def _projectable(self, group: dict[str, Any], p: Tensor) -> bool:
        flag = group["projectable"]
        return p.ndim == 2 if flag is None else bool(flag)

    def _step_group(self, group: dict[str, Any], params: list[Tensor], use_foreach: bool) -> None:
        refresh = group["step"] % group["update_gap"] == 0
        group["step"] += 1
        lr, weight_decay = group["lr"], group["weight_decay"]
        projected = [p for p in params if self._projectable(group, p)]
        if group["proj_type"] == "block" and projected:
            self._update_blocks(group, projected, refresh)
        is_projected = {id(p) for p in projected}
        for p in params:
            if weight_decay != 0:
                p.mul_(1 - lr * weight_decay)
            if id(p) not in is_projected:
                self._adamw(p, p.grad, group, lr)
            elif group["proj_type"] == "block":
                self._block_update(p, group)
            else:
                self._projected_update(p, group, refresh)

    def _adamw(self, p: Tensor, grad: Tensor, group: dict[str, Any], lr: float) -> None:
        """torch.optim.AdamW's single-tensor update of ``p`` by ``grad`` (weight decay already applied)."""
        state = self.state[p]
        if "exp_avg" not in state:
            _reset_moments(state, grad)
        exp_avg, denom, step_size = _adam_terms(state, grad, group, lr)
        p.addcdiv_(exp_avg, denom, value=-step_size)

    def _state_free(self, p: Tensor, residual: Tensor, group: dict[str, Any]) -> None:
        rule = group["inactive_update_rule"]
        if rule == "no":
            return
        lr = group["lr"] * group["proj_params_lr_scale"] * group["inactive_lr_scale"]
        p.add_(residual.sign() if rule == "sign_sgd" else residual, alpha=-lr)

    def _projected_update(self, p: Tensor, group: dict[str, Any], refresh: bool) -> None:
        grad, state = p.grad, self.state[p]
        side = _side(p.shape, group["proj_side"])
        rank = _rank(p.shape, side, group["density"])
        full = p.shape[1] if side == "right" else p.shape[0]
        lr = group["lr"] * group["proj_params_lr_scale"]
        if rank == full:
            self._adamw(p, grad, group, lr)
            return
        if rank == 0:
            self._state_free(p, grad, group)
            return
        if refresh or "projection" not in state:
            state["projection"] = self._basis(grad, side, rank, group)
            low = project_down(grad, state["projection"], side)
            if group["reset_statistics"] or "exp_avg" not in state:
                _reset_moments(state, low)
        else:
            low = project_down(grad, state["projection"], side)
        exp_avg, denom, step_size = _adam_terms(state, low, group, lr)
        p.add_(project_up(exp_avg / denom, state["projection"], side), alpha=-step_size)
        if group["inactive_update_rule"] != "no":
            self._state_free(p, grad - project_up(low, state["projection"], side), group)

    def _basis(self, grad: Tensor, side: str, rank: int, group: dict[str, Any]) -> Tensor:
        """An orthonormal basis of the new subspace: r x n for the right side, m x r for the left."""
        if group["proj_type"] == "svd":
            u, _, vh = torch.linalg.svd(grad.float(), full_matrices=False)
            basis = vh[:rank] if side == "right" else u[:, :rank]
        else:
            shape = (rank, grad.shape[1]) if side == "right" else (grad.shape[0], rank)
            generator = torch.Generator().set_state(group["rng_state"])
            basis = nn.init.orthogonal_(torch.empty(shape), generator=generator)
            group["rng_state"] = generator.get_state()
        return basis.to(device=grad.device, dtype=grad.dtype).contiguous()

    def _update_blocks(self, group: dict[str, Any], params: list[Tensor], refresh: bool) -> None:
        """Every ``update_gap`` steps (and when a tensor gets its first gradient) draw the state-full tensors;
        those leaving the set lose their moments, those staying keep them."""
        if not refresh and all("active" in self.state[p] for p in params):
            return
        generator = torch.Generator().set_state(group["rng_state"])
        order = torch.randperm(len(params), generator=generator).tolist()
        group["rng_state"] = generator.get_state()
        chosen = set(order[: round(group["density"] * len(params))])
        for i, p in enumerate(params):
            state = self.state[p]
            active = i in chosen
            if not active or not state.get("active", False):
                state.clear()
                if active:
                    _reset_moments(state, p)
            state["active"] = active

    def _block_update(self, p: Tensor, group: dict[str, Any]) -> None:
        state = self.state[p]
        if state["active"]:
            self._adamw(p, p.grad, group, group["lr"] * group["proj_params_lr_scale"])
        else:
            self._state_free(p, p.grad, group)


def _reset_moments(state: dict[str, Any], like: Tensor) -> None:
    state["step"] = 0
    state["exp_avg"] = torch.zeros_like(like, memory_format=torch.preserve_format)
    state["exp_avg_sq"] = torch.zeros_like(like, memory_format=torch.preserve_format)


def _adam_terms(state: dict[str, Any], grad: Tensor, group: dict[str, Any], lr: float) -> tuple[Tensor, Tensor, float]:
    """Advance the moments by ``grad``; return ``exp_avg``, the denominator and the step size, as torch's AdamW."""
    beta1, beta2 = group["betas"]
    state["step"] += 1
    step = state["step"]
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    adam_moments_(exp_avg, exp_avg_sq, grad, beta1, beta2)
    denom = (exp_avg_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(group["eps"])
    return exp_avg, denom, lr / (1 - beta1**step)


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _check_group(group: dict[str, Any]) -> None:
    check_range("lr", group["lr"])
    check_betas(group["betas"])
    check_range("eps", group["eps"])
    check_range("weight_decay", group["weight_decay"])
    check_range("density", group["density"], 0.0, 1.0)
    gap = group["update_gap"]
    if isinstance(gap, bool) or not isinstance(gap, int) or gap < 1:
        raise ValueError(f"update_gap must be an integer in [1, inf), got {gap!r}")
    _check_choice("proj_type", group["proj_type"], PROJ_TYPES)
    _check_choice("proj_side", group["proj_side"], PROJ_SIDES)
    _check_choice("inactive_update_rule", group["inactive_update_rule"], INACTIVE_RULES)
    check_range("inactive_lr_scale", group["inactive_lr_scale"])
    check_range("proj_params_lr_scale", group["proj_params_lr_scale"])
    if isinstance(group["seed"], bool) or not isinstance(group["seed"], int):
        raise ValueError(f"seed must be an integer or None, got {group['seed']!r}")
    if group["projectable"] not in (None, True, False):
        raise ValueError(f"projectable must be True, False or None, got {group['projectable']!r}")
    if group["projectable"] and group["proj_type"] != "block":
        for p in group["params"]:
            if p.ndim != 2:
                raise ValueError(
                    f"projectable tensors must be 2-D for proj_type={group['proj_type']!r}, got shape "
                    f"{tuple(p.shape)}; mark the group projectable=False or use proj_type='block'"
                )
