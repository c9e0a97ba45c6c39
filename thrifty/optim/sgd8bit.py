"""SGD with momentum whose momentum buffer is stored in 8 bits, block-wise quantized.

Paper: T. Dettmers, M. Lewis, S. Shleifer, L. Zettlemoyer, "8-bit Optimizers via Block-wise
Quantization", arXiv:2110.02861 (ICLR 2022). Official code: bitsandbytes ``bnb.optim.SGD8bit``
(the ``"momentum"`` update of ``backends/cpu/ops.py``).

Update for a parameter ``p`` at step ``t``, with ``Q``/``D`` the block-wise quantizer and
dequantizer of ``thrifty.compress.quant`` (signed dynamic code)::

    g   = grad + weight_decay * p                         # coupled L2, as torch.optim.SGD
    buf = D(buf_q)
    buf = g                                  if t == 1
        = momentum * buf + (1 - dampening) * g otherwise
    p   = p - lr * (g + momentum * buf if nesterov else buf)
    buf_q = Q(buf)                                         # fresh absmax per block

This is ``torch.optim.SGD``'s rule (bitsandbytes' CPU update is the same with ``dampening=0`` and
no Nesterov), so with the buffer in 32 bit the two agree bit for bit (torch's fused kernel for
contiguous fp32 CPU tensors, its single-tensor path with ``fused=False`` or other tensors). A quantized buffer uses the
same formulas with one rounding per operation (no fused multiply-add), which the eager paths and
the native and compiled ``fused=True`` kernels reproduce alike. Plain SGD has no state to
quantize, so ``momentum`` must be positive (bitsandbytes raises too).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from thrifty.optim._core import check_range
from thrifty.optim._lowbit import BlockwiseOptimizer

__all__ = ["SGD8bit"]


class SGD8bit(BlockwiseOptimizer):
    """SGD with an 8-bit block-wise momentum buffer; keyword names and defaults follow ``bnb.optim.SGD8bit``.

    Args:
        params: parameters or param-group dicts.
        lr: learning rate (required, as in bitsandbytes).
        momentum: momentum factor, in (0, 1].
        dampening: dampening of the gradient added to the buffer after the first step.
        weight_decay: coupled L2 coefficient, added to the gradient.
        nesterov: Nesterov momentum (needs ``dampening=0``, as torch).
        min_8bit_size: tensors with fewer elements keep an fp32 buffer (4096, as bitsandbytes).
        block_size: elements per absmax block (256); ``None`` for one block per tensor.
        quant_map: ``"dynamic"`` (the paper's code) or ``"linear"``.
        fused: ``False`` for the whole-tensor reference path; ``None`` (default) or ``True`` for a
            native C kernel on contiguous fp32 CPU tensors, else a chunked eager path (``None``) or
            a ``torch.compile`` kernel (``True``), as ``Adam8bit``; all give the same numbers, bit
            for bit.

    State per parameter: ``step`` (int), ``state1`` (uint8 codes of the buffer, or fp32 when kept in
    32 bit) and ``absmax1``. A step with a non-finite gradient is skipped with a ``RuntimeWarning``.
    """

    _states = (("momentum_buffer", True),)
    _native_kernel = "sgd"

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        min_8bit_size: int = 4096,
        block_size: int | None = 256,
        quant_map: str = "dynamic",
        fused: bool | None = None,
    ) -> None:
        check_range("lr", lr)
        check_range("momentum", momentum, 0.0, 1.0, low_inclusive=False)
        check_range("dampening", dampening, 0.0, 1.0)
        check_range("weight_decay", weight_decay)
        if nesterov and dampening != 0:
            raise ValueError("nesterov momentum requires dampening=0")
        self._check_lowbit_options(min_8bit_size, block_size, quant_map)
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            min_8bit_size=min_8bit_size,
            block_size=block_size,
            quant_map=quant_map,
            fused=fused,
        )
        super().__init__(params, defaults)

    def _update(self, group: dict[str, Any], step: int, p: Tensor, grad: Tensor, states: list[Tensor]) -> None:
        (buf,) = states
        momentum, weight_decay = group["momentum"], group["weight_decay"]
        if weight_decay != 0:
            grad = grad.add(p, alpha=weight_decay)
        if step == 1:
            buf.copy_(grad)
        else:
            buf.mul_(momentum).add_(grad, alpha=1 - group["dampening"])
        update = grad.add(buf, alpha=momentum) if group["nesterov"] else buf
        p.add_(update, alpha=-group["lr"])

    def _update_fused(self, group: dict[str, Any], batch: list[tuple[Tensor, list[Tensor], int]]) -> None:
        for first in (True, False):  # torch's kernel takes one first-step flag per call
            part = [(p, states[0]) for p, states, step in batch if (step == 1) == first]
            if part:
                torch._fused_sgd_(
                    [p for p, _ in part],
                    [p.grad for p, _ in part],
                    [buf for _, buf in part],
                    weight_decay=group["weight_decay"],
                    momentum=group["momentum"],
                    lr=group["lr"],
                    dampening=group["dampening"],
                    nesterov=group["nesterov"],
                    maximize=False,
                    is_first_step=first,
                )

    @staticmethod
    def _rule(p, grad, states, hp, sqrt, options):  # noqa: ANN001, ANN205 - see BlockwiseOptimizer._rule
        (buf,) = states
        (nesterov,) = options
        momentum, damping, weight_decay, neg_lr, first = hp.unbind()
        grad = grad + weight_decay * p
        buf = torch.where(first > 0, grad, buf * momentum + damping * grad)
        update = grad + momentum * buf if nesterov else buf
        return p + neg_lr * update, [buf]

    def _hyperparameters(self, group: dict[str, Any], step: int) -> tuple[float, ...]:
        return (group["momentum"], 1 - group["dampening"], group["weight_decay"], -group["lr"], float(step == 1))

    def _options(self, group: dict[str, Any]) -> tuple[Any, ...]:
        return (bool(group["nesterov"]),)

    def _native_flags(self, group: dict[str, Any]) -> int:
        return int(bool(group["nesterov"]))
