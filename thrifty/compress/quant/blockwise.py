"""Block-wise 8-bit quantization: 256-entry code maps, one fp32 absmax per block.

Paper: T. Dettmers, M. Lewis, S. Shleifer, L. Zettlemoyer, "8-bit Optimizers via Block-wise
Quantization", arXiv:2110.02861 (ICLR 2022). Official code: bitsandbytes, ``functional.py``
(``create_dynamic_map``, ``quantize_blockwise``).

A tensor is flattened and cut into blocks of ``block_size`` elements (the last block may be
shorter). Each block ``b`` is normalised by its absolute maximum and every element is replaced by
the index of the nearest value of a sorted 256-entry code ``c`` in [-1, 1]::

    s_b = max_i |x_i|                                  # fp32, one per block
    q_i = argmin_j |x_i / s_b - c_j|                   # uint8
    x_i ~ c[q_i] * s_b                                 # dequantization

Normalising per block confines an outlier's damage to its own block, which is why the paper
quantizes optimizer states block-wise rather than tensor-wise. The *dynamic* code spends its
values on a base-10 exponent and a linear fraction, so it is precise for both small and large
magnitudes; the unsigned variant doubles the resolution for non-negative tensors (Adam's second
moment). Zero is a code value, so zeros and all-zero blocks come back exactly.

The nearest code is found with ``torch.bucketize`` against the midpoints of adjacent codes (a
binary search, 8 comparisons per element) rather than an argmin over all 256 codes. Ties at a
midpoint go to the lower code. ``CodeLookup`` finds the same indices by a table lookup on the
float's top 16 bits, for code that quantizes often (the 8-bit optimizers), and ``quantize_blockwise``
runs that lookup in the native kernel of ``thrifty._native`` for fp32 CPU tensors (the same codes,
about 30 times faster than through ``bucketize`` on 4M values). ``block_size=None``
makes the whole tensor one block (tensor-wise quantization, the ablation of the paper).
"""

from __future__ import annotations

import ctypes
import math
import numbers
import sys
from typing import NamedTuple

import torch
from torch import Tensor

from thrifty import _native

__all__ = [
    "CodeLookup",
    "Quantized",
    "dequantize_blockwise",
    "dynamic_map",
    "linear_map",
    "lookup_compact",
    "nearest_code",
    "quantize_blockwise",
    "stochastic_code",
]


class Quantized(NamedTuple):
    """Codes (uint8, the input's shape) and one fp32 absmax per block; unpacks as a pair."""

    codes: Tensor
    absmax: Tensor


def dynamic_map(signed: bool = True) -> Tensor:
    """The sorted 256-entry dynamic code of the paper (``create_dynamic_map`` in bitsandbytes).

    For each exponent ``e = 0 .. 6`` it adds the midpoints of an even grid on [0.1, 1] scaled by
    ``10**(e - 6)``; the grid has ``2**e + 1`` points when signed (mirrored to the negative side)
    and ``2**(e + 1) + 1`` when unsigned, which is 254 values either way. Exact 0 and 1 complete
    it; the signed code's most negative value is -0.99297, not -1.
    """
    values: list[float] = [0.0, 1.0]
    for e in range(7):
        grid = torch.linspace(0.1, 1, 2 ** (e + (0 if signed else 1)) + 1, dtype=torch.float32)
        means = (grid[:-1] + grid[1:]) / 2.0
        values += (10 ** (e - 6) * means).tolist()
        if signed:
            values += (-(10 ** (e - 6)) * means).tolist()
    return torch.tensor(sorted(values), dtype=torch.float32)


def linear_map(signed: bool = True) -> Tensor:
    """A 256-entry evenly spaced code with exact zero.

    Unsigned: ``k / 255`` for ``k = 0 .. 255``. Signed: ``k / 127`` for ``k = -127 .. 127``, plus
    a second zero to fill 256 entries (as bitsandbytes' ``create_linear_map``), so it is symmetric.
    """
    if signed:
        values = torch.arange(-127, 128, dtype=torch.float32) / 127.0
        return torch.sort(torch.cat([values, torch.zeros(1)])).values
    return torch.arange(256, dtype=torch.float32) / 255.0


def _check(x: Tensor, block_size: int | None) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"cannot quantize an empty tensor (shape {tuple(x.shape)})")
    _check_block_size(block_size)


def _check_block_size(block_size: int | None) -> None:
    if block_size is None:
        return
    if isinstance(block_size, bool) or not isinstance(block_size, numbers.Integral) or block_size < 1:
        raise ValueError(f"block_size must be a positive integer or None, got {block_size!r}")


def _check_code(code: Tensor) -> None:
    if not isinstance(code, Tensor) or code.shape != (256,) or not code.is_floating_point():
        raise ValueError("code must be a floating-point tensor of 256 sorted values")


def _block_absmax(flat: Tensor, block_size: int) -> Tensor:
    """One absmax per block of ``flat`` (1-D), the last block possibly partial."""
    n = flat.numel()
    full = n // block_size
    parts = []
    if full:
        parts.append(flat[: full * block_size].view(full, block_size).abs().amax(dim=1))
    if n % block_size:
        parts.append(flat[full * block_size :].abs().amax().view(1))
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def _per_element(values: Tensor, n: int, block_size: int) -> Tensor:
    """Expand one value per block to one per element of a flat tensor of ``n`` elements."""
    return values.repeat_interleave(block_size)[:n]


def nearest_code(normalized: Tensor, code: Tensor) -> Tensor:
    """Index (uint8) of the code value nearest each element of ``normalized`` (ties go lower).

    A binary search against the midpoints of adjacent codes; ``CodeLookup`` gives the same indices
    faster for fp32 input.
    """
    midpoints = (code[:-1] + code[1:]) / 2
    return torch.bucketize(normalized, midpoints, out_int32=True).to(torch.uint8)


class CodeLookup:
    """Nearest-code search by table lookup on the top 16 bits of fp32 values, equal to ``nearest_code``.

    The top 16 bits of a float32 (sign, exponent, 7 mantissa bits) split the real line into 65,536
    intervals. For each interval the table holds the nearest code ``c`` of its lowest value and the
    midpoint between ``c`` and ``c + 1``; when no interval contains two midpoints (checked when the
    table is built; true for the dynamic and linear maps) the nearest code of any ``y`` in it is
    ``c + (y > midpoint)``: two gathers and a comparison instead of ``torch.bucketize``'s binary
    search, which is about 15 times slower on a CPU. Maps that fail the check use ``bucketize``.
    """

    def __init__(self, code: Tensor) -> None:
        _check_code(code)
        self.code = code.float()
        self.midpoints = (self.code[:-1] + self.code[1:]) / 2
        top = torch.arange(65536, dtype=torch.int64, device=code.device) << 16
        low_bits = torch.where(top >= 2**31, top - 2**32, top).to(torch.int32)
        ends = torch.stack([low_bits.view(torch.float32), (low_bits | 0xFFFF).view(torch.float32)])
        lowest = ends.amin(0).nan_to_num(0.0)
        highest = ends.amax(0).nan_to_num(0.0)
        first = torch.bucketize(lowest, self.midpoints)
        self.exact = bool((torch.bucketize(highest, self.midpoints) - first).max() <= 1)
        self.first = first.to(torch.uint8)
        self.threshold = torch.cat([self.midpoints, self.midpoints.new_full((1,), math.inf)])[first]
        self._half = 1 if sys.byteorder == "little" else 0
        self._compact = self._compact_table(first, highest) if self.exact else None
        self._packed = self._packed_table() if self._compact is not None else None

    def _compact_table(self, first: Tensor, highest: Tensor) -> tuple[Tensor, Tensor, int, int]:
        """The tables for ``lookup_compact``: ``first`` and ``threshold`` keyed on |y| < 2 only, with every
        key below ``low`` (values too small to round to anything but one code) merged into row 0.

        About 6k entries instead of 65k for the dynamic maps, so they stay in the L1 cache.
        """
        keys = torch.arange(32768, device=first.device)
        zero_like = torch.ones(32768, dtype=torch.bool, device=first.device)
        for sign in (0, 32768):
            k = keys + sign
            single = torch.bucketize(highest[k], self.midpoints) == first[k]
            zero_like &= single & (first[k] == first[0]) & (self.threshold[k] == self.threshold[0])
        high = (128 << 7) - 1  # exponent 127, all mantissa bits: the largest key of |y| < 2
        low = min(int(torch.nonzero(~zero_like)[0]) if not bool(zero_like.all()) else high, high)
        rows = [keys[:1], keys[low : high + 1]]
        index = torch.cat(rows + [r + 32768 for r in rows])
        return first[index].to(torch.uint8), self.threshold[index], low, high - low + 1

    def _packed_table(self) -> Tensor | None:
        """``compact`` as one int32 per row for the native kernels: the code in bits 0-7, a 16-bit threshold above.

        A row's values share their top 16 bits, so comparing one with the row's midpoint (when the
        row holds one) comes down to comparing low 16 bits, reversed for negative values; the
        threshold is the midpoint's low 16 bits (complemented for negative rows), or 0xFFFF, which
        nothing exceeds, for rows without a midpoint. None if the last row (which also takes every
        |y| >= 2) held a midpoint, which one threshold could not express.
        """
        first, threshold, low, rows = self._compact
        r = torch.arange(rows + 1, device=first.device)
        key = torch.cat([torch.where(r == 0, 0, low + r - 1), torch.where(r == 0, 0, low + r - 1) | 0x8000])
        bits = threshold.view(torch.int32).to(torch.int64) & 0xFFFFFFFF
        # Row 0 holds no midpoint: its keys below ``low`` merge only when each rounds to one code.
        inside = torch.isfinite(threshold) & ((bits >> 16) == key) & torch.cat([r > 0, r > 0])
        edge = torch.cat([r == rows, r == rows])
        if bool((inside & edge).any()):
            return None
        negative = torch.cat([torch.zeros_like(r, dtype=torch.bool), torch.ones_like(r, dtype=torch.bool)])
        t = torch.where(inside, (bits & 0xFFFF) ^ torch.where(negative, 0xFFFF, 0), 0xFFFF)
        return (first.to(torch.int64) | (t << 8)).to(torch.int32)

    @property
    def packed(self) -> Tensor | None:
        """``compact``'s rows packed one int32 each (``kernels.c``'s ``book_t``), or None."""
        return self._packed

    @property
    def compact(self) -> tuple[Tensor, Tensor, int, int] | None:
        """``(first, threshold, low, rows)`` for ``lookup_compact``, or None when the map is not ``exact``."""
        return self._compact

    def __call__(self, normalized: Tensor, out: Tensor | None = None) -> Tensor:
        """Index (uint8) of the nearest code of each element; written into ``out`` when given."""
        if not self.exact or normalized.dtype != torch.float32 or not normalized.is_contiguous():
            codes = torch.bucketize(normalized, self.midpoints, out_int32=True)
            return codes.to(torch.uint8) if out is None else out.copy_(codes)
        keys = normalized.view(torch.uint16)[..., self._half :: 2].to(torch.int32)
        above = torch.gt(normalized, self.threshold.index_select(0, keys.view(-1)).view_as(normalized))
        first = self.first.index_select(0, keys.view(-1)).view_as(normalized)
        return torch.add(first, above) if out is None else torch.add(first, above, out=out)


def lookup_compact(normalized: Tensor, first: Tensor, threshold: Tensor, low: int, rows: int) -> Tensor:
    """``CodeLookup``'s nearest code of fp32 ``normalized`` (|y| < 2) from its ``compact`` tables.

    Written for ``torch.compile``: the key is the top 16 bits with the sign split off, keys below
    ``low`` share row 0; the choice between ``first`` and ``first + 1`` is made in int32 (a mask
    added to uint8 codes compiles to much slower code on CPU).
    """
    bits = normalized.view(torch.int32)
    row = (((bits >> 16) & 0x7FFF) - (low - 1)).clamp(0, rows)
    index = (row + (bits < 0).to(torch.int32) * (rows + 1)).long()
    below = first[index].to(torch.int32)
    return torch.where(normalized > threshold[index], below + 1, below).to(torch.uint8)


def stochastic_code(normalized: Tensor, code: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Index (uint8) of one of the two codes around each element, chosen so that the mean is exact.

    An element between ``c_j <= y <= c_{j+1}`` rounds up with probability ``(y - c_j) / (c_{j+1} - c_j)``,
    so ``E[c[q]] = y`` for every ``y`` inside the code's range; values outside it clamp to the end code.
    """
    lower = (torch.bucketize(normalized, code, right=True) - 1).clamp_(0, code.numel() - 2)
    lo, hi = code[lower], code[lower + 1]
    gap = hi - lo
    p_up = torch.where(gap > 0, (normalized - lo) / torch.where(gap > 0, gap, 1.0), 0.0).clamp_(0.0, 1.0)
    u = torch.rand(normalized.shape, generator=generator, device=normalized.device, dtype=normalized.dtype)
    return (lower + (u < p_up)).to(torch.uint8)


def quantize_blockwise(
    x: Tensor,
    code: Tensor | None = None,
    block_size: int | None = 256,
    stochastic: bool = False,
    generator: torch.Generator | None = None,
) -> Quantized:
    """Quantize ``x`` to 8-bit codes with one fp32 absmax per ``block_size`` elements.

    Args:
        x: a non-empty floating-point tensor (computed in fp32 whatever its dtype).
        code: a sorted 256-entry map (``dynamic_map(signed=True)`` when None).
        block_size: elements per block (256 as current bitsandbytes and torchao, 2048 as the
            paper); ``None`` for one block for the whole tensor.
        stochastic: round to one of the two neighbouring codes at random, unbiased in expectation.
        generator: random source for stochastic rounding.

    Returns ``Quantized(codes, absmax)``: uint8 codes of ``x``'s shape and ``ceil(n / block_size)``
    fp32 maxima. Non-finite values are not checked here; they give a non-finite absmax.
    """
    _check(x, block_size)
    code = dynamic_map(True) if code is None else code
    _check_code(code)
    flat = x.detach().reshape(-1).float()
    size = flat.numel() if block_size is None else block_size
    absmax = _block_absmax(flat, size)
    if not stochastic and flat.device.type == "cpu":
        codes = _native_codes(flat, code, absmax, size)
        if codes is not None:
            return Quantized(codes.view(x.shape), absmax)
    inverse = torch.where(absmax > 0, absmax.reciprocal(), 0.0)
    normalized = flat * _per_element(inverse, flat.numel(), size)
    code = code.to(device=flat.device, dtype=torch.float32)
    codes = stochastic_code(normalized, code, generator) if stochastic else nearest_code(normalized, code)
    return Quantized(codes.view(x.shape), absmax)


_NATIVE_BOOKS: dict[bytes, _native.Book | None] = {}


def _native_codes(flat: Tensor, code: Tensor, absmax: Tensor, size: int) -> Tensor | None:
    """Nearest codes of contiguous fp32 CPU ``flat`` by the native kernel (the same codes), or None if it cannot run."""
    if flat.dtype != torch.float32 or not flat.is_contiguous() or not bool(torch.isfinite(absmax).all()):
        return None
    key = code.detach().cpu().float().contiguous().numpy().tobytes()
    if key not in _NATIVE_BOOKS:
        if len(_NATIVE_BOOKS) >= 16:  # a caller cycling through many maps gets the torch path, not unbounded tables
            return None
        lookup = CodeLookup(code.detach().cpu().float())
        compact = lookup.compact
        _NATIVE_BOOKS[key] = None if compact is None else _native.book(lookup.code, lookup.packed, *compact[2:])
    book = _NATIVE_BOOKS[key]
    lib = _native.library() if book is not None else None
    if lib is None:
        return None
    codes = torch.empty(flat.numel(), dtype=torch.uint8)
    lib.thrifty_quantize(
        flat.data_ptr(),
        flat.numel(),
        size,
        codes.data_ptr(),
        absmax.data_ptr(),
        ctypes.byref(book),
        torch.get_num_threads(),
    )
    return codes


def dequantize_blockwise(
    codes: Tensor,
    absmax: Tensor,
    code: Tensor | None = None,
    block_size: int | None = 256,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Invert ``quantize_blockwise``: ``code[codes] * absmax`` of each block, in ``dtype``."""
    if codes.dtype != torch.uint8:
        raise TypeError(f"codes must be uint8, got {codes.dtype}")
    _check_block_size(block_size)
    code = dynamic_map(True) if code is None else code
    _check_code(code)
    n = codes.numel()
    size = n if block_size is None else block_size
    if absmax.numel() != max(1, math.ceil(n / size)):
        raise ValueError(f"absmax has {absmax.numel()} blocks, expected ceil({n} / {size})")
    values = code.to(device=codes.device, dtype=torch.float32)[codes.reshape(-1).long()]
    values.mul_(_per_element(absmax.float(), n, size))
    return values.view(codes.shape).to(dtype)
