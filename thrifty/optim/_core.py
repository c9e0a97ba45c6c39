"""Machinery shared by every thrifty optimizer.

Argument validation with messages that name the argument and its valid range, the
reference/foreach dispatch convention of ``torch.optim`` (one readable per-tensor path and
one multi-tensor path of the same math, tested against each other), and the state-memory
counter used by benchmarks and claims.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from thrifty import _native

__all__ = [
    "CompiledUpdate",
    "ThriftyOptimizer",
    "adam_moments_",
    "check_betas",
    "check_range",
    "foreach_adam_moments_",
    "state_bytes",
]


def check_range(
    name: str,
    value: float,
    low: float = 0.0,
    high: float = math.inf,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Return ``value`` if it lies in the interval, else raise ``ValueError`` naming both."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        number = float(value.item())
    else:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number, got {value!r}") from None
    lo_ok = number >= low if low_inclusive else number > low
    hi_ok = number <= high if high_inclusive else number < high
    if not (lo_ok and hi_ok) or math.isnan(number):
        left = "[" if low_inclusive else "("
        right = "]" if high_inclusive else ")"
        raise ValueError(f"{name} must be in {left}{low:g}, {high:g}{right}, got {value!r}")
    return value


def check_betas(betas: Any, n: int = 2, name: str = "betas") -> tuple[float, ...]:
    """Validate a tuple of ``n`` EMA coefficients, each in [0, 1)."""
    try:
        values = tuple(betas)
    except TypeError:
        raise ValueError(f"{name} must be a tuple of {n} numbers in [0, 1), got {betas!r}") from None
    if len(values) != n:
        raise ValueError(f"{name} must be a tuple of {n} numbers in [0, 1), got {betas!r}")
    for i, b in enumerate(values):
        check_range(f"{name}[{i}]", b, 0.0, 1.0, high_inclusive=False)
    return values


class ThriftyOptimizer(torch.optim.Optimizer):
    """Base class: gathers parameters with gradients and picks the reference or foreach path.

    Subclasses implement ``_step_group(group, params, use_foreach)``. ``foreach=None`` (the
    default) follows torch.optim: the multi-tensor path when every parameter is a plain dense
    tensor on CUDA, the per-tensor path otherwise. On a CPU, torch's ``_foreach_*`` ops loop over
    the tensors anyway and allocate more temporaries, so the per-tensor path is as fast or faster
    (``thrifty speed`` measures both).
    """

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Fill options missing from a loaded state dict (one saved by an official implementation,
        or by an older thrifty) with this optimizer's constructor values."""
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)

    def _params_with_grad(self, group: Mapping[str, Any]) -> list[Tensor]:
        params = []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(
                    f"{type(self).__name__} does not support sparse gradients; "
                    "use torch.optim.SparseAdam or a dense embedding (sparse=False)"
                )
            params.append(p)
        return params

    @staticmethod
    def _use_foreach(group: Mapping[str, Any], params: list[Tensor]) -> bool:
        foreach = group.get("foreach")
        if foreach is not None:
            return bool(foreach)
        return all(type(p) in (Tensor, torch.nn.Parameter) and p.device.type == "cuda" for p in params)

    def _step_group(self, group: dict[str, Any], params: list[Tensor], use_foreach: bool) -> None:
        raise NotImplementedError

    def _native_split(self, group: Mapping[str, Any], params: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """For ``fused=None``: the tensors the native kernel can update (contiguous fp32 CPU tensors, states
        included, when the kernel library is available) and the rest, which take the foreach or reference path.

        ``foreach=True`` asks for the multi-tensor path by name, so it gets no native tensors.
        """
        if group.get("fused") is not None or group.get("foreach") or not params:
            return [], params
        native, rest = [], []
        for p in params:
            tensors = [p, p.grad, *(v for v in self.state[p].values() if isinstance(v, Tensor))]
            (native if _native.usable(*tensors) else rest).append(p)
        if native and _native.library() is None:
            return [], params
        return native, rest

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        """Perform one optimisation step; ``closure`` re-evaluates the loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = self._params_with_grad(group)
            if params:
                self._step_group(group, params, self._use_foreach(group, params))
        return loss


class CompiledUpdate:
    """A per-tensor update compiled once by ``torch.compile`` into one fused kernel per shape class.

    This is the ``fused=True`` path of thrifty's optimizers: the elementwise update of one
    parameter (reading the parameter, its gradient and its states once, writing them once) becomes
    a single generated loop instead of a dozen eager passes. Hyperparameters arrive as one tensor
    so that a changing learning rate never triggers a recompile. If compilation fails (no
    C++ compiler, an unsupported backend), a warning is issued and the same function runs eagerly.

    ``dynamic=True`` compiles one kernel for every shape; ``dynamic=False`` compiles one per
    distinct signature (argument shapes, dtypes and plain values), which lets the compiler fix
    loop bounds and block strides, and lifts dynamo's recompile limit for it. ``compile_seconds``
    sums the time of the calls that compiled (the first call of each signature). ``options`` go
    to ``torch.compile`` (inductor settings).
    """

    def __init__(
        self,
        fn: Callable[..., None],
        *,
        dynamic: bool = True,
        max_signatures: int = 64,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.fn = fn
        self.dynamic = dynamic
        self.options = options
        self.max_signatures = max_signatures
        self._compiled: Callable[..., None] | None = None
        self._signatures: set[tuple[Any, ...]] = set()
        self.eager = False
        self.compile_seconds: float | None = None

    def _signature(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        if self.dynamic:
            return ()
        items = []
        for arg in args:
            for a in arg if isinstance(arg, (list, tuple)) else (arg,):
                items.append((tuple(a.shape), a.dtype, a.device) if isinstance(a, Tensor) else a)
        return tuple(items)

    def __call__(self, *args: Any) -> None:
        if self.eager:
            self.fn(*args)
            return
        if self._compiled is None:
            self._compiled = torch.compile(self.fn, dynamic=self.dynamic, fullgraph=True, options=self.options)
        signature = self._signature(args)
        if signature in self._signatures:
            self._run(args)
            return
        start = time.perf_counter()
        try:
            self._run(args)
        except Exception as exc:  # noqa: BLE001 - any compiler failure falls back to eager
            warnings.warn(
                f"torch.compile of {self.fn.__name__} failed ({exc!r}); using the eager update",
                RuntimeWarning,
                stacklevel=3,
            )
            self.eager = True
            self.fn(*args)
        self._signatures.add(signature)
        self.compile_seconds = (self.compile_seconds or 0.0) + time.perf_counter() - start

    def _run(self, args: tuple[Any, ...]) -> None:
        if self.dynamic:
            self._compiled(*args)
            return
        with torch._dynamo.config.patch(recompile_limit=self.max_signatures):
            self._compiled(*args)


def hyperparameters(values: Iterable[float], param: Tensor) -> Tensor:
    """Scalars for a ``CompiledUpdate`` as one tensor on the parameter's device.

    float64 for float64 parameters, else float32: the precision eager ATen kernels use for Python
    scalars applied to float32 tensors, and the generated loop then stays in single precision.
    """
    dtype = torch.float64 if param.dtype == torch.float64 else torch.float32
    return torch.tensor(list(values), dtype=dtype, device=param.device)


def adam_moments_(
    exp_avg: Tensor, exp_avg_sq: Tensor, grad: Tensor, beta1: float, beta2: float, *, lerp: bool = True
) -> None:
    """Advance Adam's moments in place: ``m <- beta1 m + (1 - beta1) g``, ``v <- beta2 v + (1 - beta2) g^2``.

    The one home of the moment update that Adam-type optimizers share (torch.optim's ``_single_tensor_adam``,
    optax's ``scale_by_adam``). ``lerp=True`` writes the first moment as torch's AdamW does (``m.lerp_(g, 1 -
    beta1)``); ``lerp=False`` as ``m.mul_(beta1).add_(g, alpha=1 - beta1)``, the official diffGrad and SOAP code's
    form. The math is the same; the last bit of rounding differs, and each optimizer keeps the form of the code
    it is pinned to bit for bit.
    """
    if lerp:
        exp_avg.lerp_(grad, 1 - beta1)
    else:
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)


def foreach_adam_moments_(
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    grads: list[Tensor],
    beta1: float,
    beta2: float,
    *,
    lerp: bool = True,
) -> None:
    """``adam_moments_`` over lists of tensors with ``torch._foreach_*`` kernels (the same rounding per element)."""
    if lerp:
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    else:
        torch._foreach_mul_(exp_avgs, beta1)
        torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)


def check_fused(foreach: bool | None, fused: bool | None) -> None:
    if fused and foreach:
        raise ValueError("foreach and fused cannot both be True; fused=True already updates each tensor in one kernel")


def _tensor_bytes(obj: Any, seen: set[int]) -> int:
    if isinstance(obj, Tensor):
        key = obj.untyped_storage().data_ptr() if obj.device.type != "meta" else id(obj)
        if key in seen and key != 0:
            return 0
        seen.add(key)
        return obj.untyped_storage().nbytes()
    if isinstance(obj, Mapping):
        return sum(_tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v, seen) for v in obj)
    return 0


def state_bytes(optimizer: torch.optim.Optimizer | Iterable[torch.optim.Optimizer]) -> int:
    """Bytes held by an optimizer's per-parameter state tensors (shared storage counted once).

    Counts every tensor reachable from ``optimizer.state`` (moments, preconditioners, step
    counters), so two optimizers can be compared by what they really allocate.
    """
    optimizers = [optimizer] if isinstance(optimizer, torch.optim.Optimizer) else list(optimizer)
    seen: set[int] = set()
    return sum(_tensor_bytes(dict(opt.state), seen) for opt in optimizers)
