"""Machinery shared by the 8-bit optimizers: quantized state buffers, the 32-bit opt-out, the finite-gradient guard.

A state tensor of at least ``min_8bit_size`` elements is stored as uint8 codes (the parameter's
shape) plus one fp32 absmax per ``block_size`` elements, through ``thrifty.compress.quant``. Each
step dequantizes it, runs the optimizer's update in fp32 and requantizes it with fresh maxima
(Dettmers et al., arXiv 2110.02861). Smaller tensors, and parameters marked with
``keep_32bit_state`` (``StableEmbedding`` does this for its weight), keep fp32 state.

Four paths compute the same numbers, bit for bit (tested):

* ``fused=False``, the reference: dequantizes whole tensors with the core's ``dequantize_blockwise``
  and requantizes with ``quantize_blockwise``;
* ``fused=None`` (the default) and ``fused=True``, native, on contiguous fp32 CPU tensors: one call
  per param group of the subclass's ``_native_kernel`` in ``thrifty._native`` (C with AVX-512,
  built on first use), which decodes 64 codes at a time with byte permutes, runs the update, takes
  the block maxima and encodes with one lookup per value in ``CodeLookup.packed``, over OpenMP
  threads;
* ``fused=None`` otherwise (other dtypes or devices, no C compiler, ``THRIFTY_NATIVE=0``), chunked
  eager: walks each tensor in chunks of whole blocks small enough to stay in cache and finds
  nearest codes with ``CodeLookup`` tables;
* ``fused=True`` otherwise, compiled: one ``torch.compile`` kernel per shape of a tensor's whole
  blocks views them as ``(blocks, block_size)``, gathers the states from the 256-entry maps, times
  the block maxima, runs the update in fp32, takes the new block maxima and requantizes by
  ``CodeLookup``'s compact table lookup on the top 16 bits of each normalised value (a gather and
  a compare instead of a search), writing parameter, codes and maxima in place; a partial last
  block runs eagerly. The first step of each new shape pays the compile (seconds).

States kept in 32 bit (tensors under ``min_8bit_size``: biases, norms) follow torch's own
optimizers: with ``fused=False`` their single-tensor operations, otherwise, for contiguous fp32 CPU
tensors, torch's fused multi-tensor kernel (``torch._fused_adamw_``, ``torch._fused_sgd_``) over all
of a group's such tensors in one call.

Bit-identical results need every path to round alike, so the update of quantized states is a
``_rule`` of separately rounded operations: no ``lerp``/``addcmul``/``add(alpha=)``, which ATen's
CPU kernels compute with fused multiply-adds that compiled code does not reproduce, and a
correctly rounded square root (eager ``torch.sqrt`` on CPU may be one ulp off; compiled code's is
exact).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from itertools import chain
from typing import Any

import torch
from torch import Tensor

from thrifty import _native
from thrifty.compress.quant.blockwise import (
    CodeLookup,
    _check_block_size,
    dequantize_blockwise,
    dynamic_map,
    linear_map,
    lookup_compact,
    quantize_blockwise,
)
from thrifty.optim._core import CompiledUpdate, ThriftyOptimizer, check_range, hyperparameters

__all__ = ["STATE_BITS_ATTR", "BlockwiseOptimizer", "blockwise_update", "keep_32bit_state"]

STATE_BITS_ATTR = "thrifty_state_bits"
"""Parameter attribute read by the 8-bit optimizers: ``32`` keeps that parameter's state in fp32."""

QUANT_MAPS = ("dynamic", "linear")
# Elements per fast-path chunk: ATen's grain size, so that none of the ~30 small operations per chunk
# opens a parallel region. Larger chunks were 10% faster on an idle machine but up to 20 times slower
# when another process held a core (every region waits for its descheduled thread).
CHUNK = 1 << 15


def keep_32bit_state(param: Tensor) -> Tensor:
    """Mark ``param`` so that 8-bit optimizers keep its state in fp32 (bitsandbytes' ``optim_bits=32`` override)."""
    setattr(param, STATE_BITS_ATTR, 32)
    return param


class _Codebook:
    """A code map, its nearest-code lookup table and the index of its zero, on one device."""

    def __init__(self, code: Tensor) -> None:
        self.code = code
        self.nearest = CodeLookup(code)
        self.zero_index = int(torch.nonzero(code == 0)[0])
        self._native: _native.Book | None = None

    @property
    def native(self) -> _native.Book | None:
        """The map and its packed lookup table for the native kernels, or None (no packed table, not on the CPU)."""
        if self._native is None and self.nearest.compact is not None:
            self._native = _native.book(self.code, self.nearest.packed, *self.nearest.compact[2:])
        return self._native


_BOOKS: dict[tuple[str, bool, torch.device], _Codebook] = {}


def codebook(name: str, signed: bool, device: torch.device) -> _Codebook:
    key = (name, signed, device)
    if key not in _BOOKS:
        make = dynamic_map if name == "dynamic" else linear_map
        _BOOKS[key] = _Codebook(make(signed).to(device))
    return _BOOKS[key]


def _blocks(x: Tensor, size: int) -> tuple[Tensor | None, Tensor | None]:
    """A 1-D tensor as a (blocks, size) view of its whole blocks and the 1-D partial tail."""
    full = x.numel() // size
    head = x[: full * size].view(full, size) if full else None
    tail = x[full * size :] if x.numel() % size else None
    return head, tail


def _dequantize_chunk(codes: Tensor, absmax: Tensor, book: _Codebook, size: int) -> Tensor:
    """fp32 values of a chunk of codes (1-D, starting on a block boundary) and the chunk's maxima."""
    values = book.code.index_select(0, codes.int())
    head, tail = _blocks(values, size)
    if head is not None:
        head.mul_(absmax[: head.shape[0], None])
    if tail is not None:
        tail.mul_(absmax[-1])
    return values


def _quantize_chunk(values: Tensor, codes: Tensor, absmax: Tensor, book: _Codebook, size: int, signed: bool) -> None:
    """Write the codes and maxima of a chunk of fp32 values into ``codes`` and ``absmax`` (views of the state)."""
    head, tail = _blocks(values, size)
    if head is not None:
        if signed:  # two reductions beat abs() + one: no temporary, and aminmax is slow on CPU
            block_max = torch.maximum(head.amin(dim=1).neg_(), head.amax(dim=1))
        else:
            block_max = head.amax(dim=1)
        absmax[: head.shape[0]] = block_max
    if tail is not None:
        absmax[-1] = tail.abs().max()
    inverse = torch.where(absmax > 0, absmax.reciprocal(), 0.0)
    if head is not None:
        head.mul_(inverse[: head.shape[0], None])
    if tail is not None:
        tail.mul_(inverse[-1])
    book.nearest(values, out=codes)


def exact_sqrt(x: Tensor) -> Tensor:
    """Correctly rounded fp32 square root (through fp64), as compiled code computes it."""
    return x.double().sqrt().to(x.dtype)


Rule = Callable[
    [Tensor, Tensor, list[Tensor], Tensor, Callable[[Tensor], Tensor], tuple[Any, ...]], tuple[Tensor, list[Tensor]]
]


def blockwise_update(
    rule: Rule,
    options: tuple[Any, ...],
    p: Tensor,
    grad: Tensor,
    codes: list[Tensor],
    absmax: list[Tensor],
    tables: list[tuple[Tensor, Tensor, Tensor, int, int]],
    hp: Tensor,
    size: int,
) -> None:
    """One optimizer step of one flat tensor of whole blocks with quantized states, in place (for ``torch.compile``).

    ``codes``/``absmax`` are the states' flat uint8 codes and block maxima, ``tables`` each state's
    code map and ``CodeLookup.compact`` tables; ``p.numel()`` is a multiple of ``size``.
    """
    blocks = absmax[0].numel()
    states = [
        code[c.long()].view(blocks, size) * a[:, None] for c, a, (code, *_) in zip(codes, absmax, tables, strict=True)
    ]
    sqrt = torch.sqrt if torch.compiler.is_compiling() else exact_sqrt  # compiled sqrt is correctly rounded
    new_p, new_states = rule(p.float().view(blocks, size), grad.float().view(blocks, size), states, hp, sqrt, options)
    p.copy_(new_p.view(-1))
    for x, c, a, (_, *compact) in zip(new_states, codes, absmax, tables, strict=True):
        block_max = x.abs().amax(dim=1)
        normalized = x * torch.where(block_max > 0, block_max.reciprocal(), 0.0)[:, None]
        c.copy_(lookup_compact(normalized, *compact).view(-1))
        a.copy_(block_max)


# Every gather index is in range by construction (uint8 codes into 256-entry maps, clamped table rows),
# so the kernel skips inductor's per-vector bounds checks.
_COMPILED = CompiledUpdate(blockwise_update, dynamic=False, options={"assert_indirect_indexing": False})


SQUARE_LIMIT = 2.0**64
"""Gradients with a value at least this large (or NaN) skip the step: their squares overflow fp32."""


def _squares_finite(grads: list[Tensor]) -> bool:
    """Whether every gradient value is below ``SQUARE_LIMIT`` in magnitude: fp32 CPU ones natively, others by torch."""
    rest = grads
    lib = _native.library() if any(_native.usable(g) for g in grads) else None
    if lib is not None:
        if not _native.squares_finite(lib, [g for g in grads if _native.usable(g)]):
            return False
        rest = [g for g in grads if not _native.usable(g)]
    return all(bool(g.abs().amax() < SQUARE_LIMIT) for g in rest if g.numel())


class QuantizedState:
    """An 8-bit state tensor: codes of the parameter's shape and one fp32 absmax per block."""

    def __init__(self, codes: Tensor, absmax: Tensor, book: _Codebook, size: int, signed: bool) -> None:
        self.codes, self.absmax, self.book, self.size, self.signed = codes, absmax, book, size, signed

    def load(self) -> Tensor:
        """The whole state in fp32 (reference path)."""
        return dequantize_blockwise(self.codes, self.absmax, self.book.code, self.size).view(-1)

    def save(self, values: Tensor) -> None:
        """Requantize the whole state from fp32 ``values`` (reference path)."""
        codes, absmax = quantize_blockwise(values, self.book.code, self.size)
        self.codes.copy_(codes.view_as(self.codes))
        self.absmax.copy_(absmax)

    def load_chunk(self, start: int, end: int) -> Tensor:
        """Elements ``start:end`` in fp32; ``start`` is a multiple of the block size (fast path)."""
        blocks = slice(start // self.size, -(-end // self.size))
        return _dequantize_chunk(self.codes.view(-1)[start:end], self.absmax[blocks], self.book, self.size)

    def save_chunk(self, start: int, values: Tensor) -> None:
        """Requantize elements ``start:start + len(values)`` from fp32 ``values`` (consumed; fast path)."""
        end = start + values.numel()
        blocks = slice(start // self.size, -(-end // self.size))
        codes = self.codes.view(-1)[start:end]
        _quantize_chunk(values, codes, self.absmax[blocks], self.book, self.size, self.signed)


class BlockwiseOptimizer(ThriftyOptimizer):
    """Base of the 8-bit optimizers: state allocation, the 32-bit rules, the finite guard, the chunk loop.

    Subclasses list their state buffers in ``_states`` (name, signed) and implement ``_update``,
    which advances fp32 views of the parameter, gradient and 32-bit states in place with torch's
    operations, and ``_rule``/``_hyperparameters``/``_options``, the same update for quantized states
    written once for the eager paths (whole tensor or chunks) and the compiled kernel.

    A step whose gradients hold a NaN, an infinity or a value whose square overflows fp32 (at least
    2**64 in magnitude; one native pass over all gradients where it can) is skipped for every
    parameter, with a ``RuntimeWarning``: no parameter, state or step counter changes, so the
    quantized state is never poisoned (as ``torch.amp.GradScaler`` skips steps).
    """

    _states: tuple[tuple[str, bool], ...] = ()

    @staticmethod
    def _check_lowbit_options(min_8bit_size: int, block_size: int | None, quant_map: str) -> None:
        check_range("min_8bit_size", min_8bit_size)
        _check_block_size(block_size)
        if quant_map not in QUANT_MAPS:
            raise ValueError(f"quant_map must be one of {', '.join(QUANT_MAPS)}, got {quant_map!r}")

    def _is_8bit(self, p: Tensor, group: dict[str, Any]) -> bool:
        return p.numel() >= group["min_8bit_size"] and getattr(p, STATE_BITS_ATTR, 8) != 32

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state = self.state[p]
        if not state:
            state["step"] = 0
            eight = self._is_8bit(p, group)
            size = group["block_size"] or p.numel()
            for i, (_, signed) in enumerate(self._states, start=1):
                if eight:
                    book = codebook(group["quant_map"], signed, p.device)
                    state[f"state{i}"] = torch.full(p.shape, book.zero_index, dtype=torch.uint8, device=p.device)
                    state[f"absmax{i}"] = torch.zeros(-(-p.numel() // size), dtype=torch.float32, device=p.device)
                else:
                    state[f"state{i}"] = torch.zeros(p.shape, dtype=torch.float32, device=p.device)
        return state

    def _quantized(self, p: Tensor, group: dict[str, Any]) -> list[QuantizedState] | None:
        state = self.state[p]
        if state["state1"].dtype != torch.uint8:
            return None
        size = group["block_size"] or p.numel()
        return [
            QuantizedState(
                state[f"state{i}"], state[f"absmax{i}"], codebook(group["quant_map"], signed, p.device), size, signed
            )
            for i, (_, signed) in enumerate(self._states, start=1)
        ]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load as torch does, but keep each state tensor's saved dtype and copy it.

        ``torch.optim.Optimizer`` casts floating state to the parameter's dtype, which would turn
        uint8 codes into floats and round fp32 maxima of a bf16 parameter; copying also keeps the
        loaded state from aliasing the tensors of ``state_dict``.
        """
        saved = state_dict["state"]
        super().load_state_dict(state_dict)
        ids = chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        params = chain.from_iterable(g["params"] for g in self.param_groups)
        for param_id, p in zip(ids, params, strict=True):
            for key, value in saved.get(param_id, {}).items():
                if isinstance(value, Tensor):
                    self.state[p][key] = value.to(device=p.device, copy=True)

    def _update(self, group: dict[str, Any], step: int, p: Tensor, grad: Tensor, states: list[Tensor]) -> None:
        """Advance fp32 ``p`` and 32-bit ``states`` in place with torch's operations."""
        raise NotImplementedError

    def _update_fused(self, group: dict[str, Any], batch: list[tuple[Tensor, list[Tensor], int]]) -> None:
        """Advance contiguous fp32 CPU parameters with 32-bit states, (param, states, step) each, with one of
        torch's fused multi-tensor kernels (the small tensors of a model: biases, norms)."""
        raise NotImplementedError

    @staticmethod
    def _rule(
        p: Tensor,
        grad: Tensor,
        states: list[Tensor],
        hp: Tensor,
        sqrt: Callable[[Tensor], Tensor],
        options: tuple[Any, ...],
    ) -> tuple[Tensor, list[Tensor]]:
        """The same update for dequantized states, out of place, one rounding per operation (eager and compiled)."""
        raise NotImplementedError

    def _hyperparameters(self, group: dict[str, Any], step: int) -> tuple[float, ...]:
        """The scalars ``_rule`` reads from ``hp``, computed in Python floats."""
        raise NotImplementedError

    def _options(self, group: dict[str, Any]) -> tuple[Any, ...]:
        """Structural options of ``_rule`` (a compiled kernel specialises on them)."""
        return ()

    _native_kernel: str | None = None
    """The kernel of ``thrifty._native.step8bit`` that computes ``_rule`` (``"adam"``, ``"sgd"``)."""

    def _native_flags(self, group: dict[str, Any]) -> int:
        """``_options`` as the native kernel's integer flags."""
        return 0

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One optimisation step, skipped with a warning if any gradient is not finite or too large to square."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = [(group, self._params_with_grad(group)) for group in self.param_groups]
        grads = [p.grad for _, params in work for p in params]
        if not _squares_finite(grads):
            warnings.warn(
                f"{type(self).__name__}: a gradient is NaN, infinite or too large to square in fp32 (>= 2**64); "
                "skipped this step, leaving parameters and optimizer state unchanged",
                RuntimeWarning,
                stacklevel=2,
            )
            return loss
        for group, params in work:
            if params:
                self._step_group(group, params, False)
        return loss

    def _step_group(self, group: dict[str, Any], params: list[Tensor], use_foreach: bool) -> None:
        native: list[tuple[Tensor, list[QuantizedState], int]] = []
        fused32: list[tuple[Tensor, list[Tensor], int]] = []
        lib = None
        for p in params:
            state = self._init_state(p, group)
            state["step"] += 1
            step = state["step"]
            quantized = self._quantized(p, group)
            if quantized is None and group["fused"] is not False and _native.usable(p, p.grad):
                fused32.append((p, [state[f"state{i}"] for i in range(1, 1 + len(self._states))], step))
                continue
            if quantized is not None and group["fused"] is not False:
                if self._native_kernel is not None and _native.usable(p, p.grad):
                    if all(q.book.native is not None for q in quantized):
                        lib = lib or _native.library()
                        if lib is not None:
                            native.append((p, quantized, step))
                            continue
                if group["fused"]:
                    self._step_compiled(group, step, p, quantized)
                    continue
            grad = p.grad.reshape(-1).float()
            flat = p.detach().view(-1) if p.dtype == torch.float32 and p.is_contiguous() else p.detach().reshape(-1)
            work = flat if flat.dtype == torch.float32 else flat.float()
            if quantized is None:
                buffers = [state[f"state{i}"].view(-1) for i in range(1, 1 + len(self._states))]
                self._update(group, step, work, grad, buffers)
            else:
                hp = hyperparameters(self._hyperparameters(group, step), work)
                size = quantized[0].size
                chunk = work.numel() if group["fused"] is False else max(size, CHUNK // size * size)
                for start in range(0, work.numel(), chunk):
                    self._step_chunk(quantized, work, grad, start, min(work.numel(), start + chunk), hp, group)
            if work.data_ptr() != p.data_ptr():
                p.copy_(work.view_as(p))
        if native:
            self._step_native(lib, group, native)
        if fused32:
            self._update_fused(group, fused32)

    def _step_native(
        self, lib: Any, group: dict[str, Any], batch: list[tuple[Tensor, list[QuantizedState], int]]
    ) -> None:
        """The tensors of ``batch`` (contiguous fp32 on the CPU) through one call of the native kernel."""
        quantized = batch[0][1]
        books = (quantized[0].book.native, quantized[1].book.native if len(quantized) > 1 else None)
        _native.step8bit(
            lib,
            self._native_kernel,
            [(p, p.grad, *chain.from_iterable((q.codes, q.absmax) for q in qs)) for p, qs, _ in batch],
            [qs[0].size for _, qs, _ in batch],
            books,
            [self._hyperparameters(group, step) for _, _, step in batch],
            self._native_flags(group),
        )

    def _step_chunk(
        self,
        quantized: list[QuantizedState],
        work: Tensor,
        grad: Tensor,
        start: int,
        end: int,
        hp: Tensor,
        group: dict[str, Any],
    ) -> None:
        """Eager update of elements ``start:end`` (``start`` on a block boundary) of fp32 ``work``."""
        whole = start == 0 and end == work.numel()
        values = [q.load() if whole else q.load_chunk(start, end) for q in quantized]
        new_p, new_states = self._rule(work[start:end], grad[start:end], values, hp, exact_sqrt, self._options(group))
        work[start:end] = new_p
        for q, v in zip(quantized, new_states, strict=True):
            if whole:
                q.save(v)
            else:
                q.save_chunk(start, v)

    def _step_compiled(self, group: dict[str, Any], step: int, p: Tensor, quantized: list[QuantizedState]) -> None:
        """The whole blocks through one compiled kernel per shape; a partial last block eagerly (same numbers)."""
        flat = p.detach().view(-1) if p.is_contiguous() else p.detach().reshape(-1)
        grad = p.grad.reshape(-1)
        size = quantized[0].size
        full = flat.numel() // size * size
        hp = torch.tensor(self._hyperparameters(group, step), dtype=torch.float32, device=p.device)
        if full:
            blocks = full // size
            _COMPILED(
                type(self)._rule,
                self._options(group),
                flat[:full],
                grad[:full],
                [q.codes.view(-1)[:full] for q in quantized],
                [q.absmax[:blocks] for q in quantized],
                [(q.book.code, *q.book.nearest.compact) for q in quantized],
                hp,
                size,
            )
        if full < flat.numel():
            work = flat if flat.dtype == torch.float32 else flat.float()
            self._step_chunk(quantized, work, grad.float(), full, flat.numel(), hp, group)
            if work is not flat:
                flat[full:] = work[full:]
        if flat.data_ptr() != p.data_ptr():
            p.copy_(flat.view_as(p))
