"""Native CPU kernels: ``kernels.c``, compiled on first use and cached.

torch's fused AdamW is a hand-vectorised C++ loop; the nearest-code search of 8-bit states needs
table lookups that ``torch.compile`` turns into scalar loads, so a ``fused=True`` step of the
8-bit optimizers stayed several times slower than it. ``kernels.c`` writes block-wise encoding, a
gradient check and the fused steps of the 8-bit optimizers, SGD-SaI and diffGrad with AVX-512
(byte permutes to decode codes, one table gather to encode; plain C where the CPU lacks
AVX-512), with the same roundings as the eager and compiled paths, so they give the same numbers
bit for bit (tested; diffGrad's ``exp`` is within about 2 ulp). Each call takes every tensor of a
param group, so small tensors cost no per-tensor call.

The library is built once per machine with the system C compiler (``$CC``, else ``cc``) as
``-O3 -march=native -fopenmp -ffp-contract=off`` into the ``native`` folder of thrifty's cache
(``$THRIFTY_CACHE_DIR``, default ``~/.cache/thrifty``; the temporary directory when that cannot be created), keyed by a
hash of the source, the flags, the compiler and the CPU, and loaded with ``ctypes`` (which
releases the GIL during a call). Building takes about a second; ``build_seconds()`` reports it.
Without a working compiler ``library()`` warns once and returns ``None``, and the optimizers use
their ``torch.compile`` kernels (``fused=True``) or eager paths. ``THRIFTY_NATIVE=0`` turns the
native kernels off; ``THRIFTY_NATIVE_CFLAGS`` adds compiler arguments (``-mno-avx512f`` builds the
plain C loops, ``-mno-avx512vbmi`` the AVX-512 loops without byte permutes).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import Tensor

from thrifty._cache import cache_root

__all__ = ["Book", "book", "build_seconds", "library", "squares_finite", "step32bit", "step8bit", "usable"]

SOURCE = Path(__file__).with_name("kernels.c")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-ffp-contract=off", "-fno-math-errno", "-shared", "-fPIC")


class Book(ctypes.Structure):
    """``book_t`` of kernels.c: a code map and ``CodeLookup.packed``'s table (their tensors must outlive it)."""

    _fields_ = [
        ("code", ctypes.c_void_p),
        ("entries", ctypes.c_void_p),
        ("low", ctypes.c_int32),
        ("rows", ctypes.c_int32),
    ]


_BOOKS: list[tuple[Tensor, ...]] = []  # tensors a Book points into, kept alive for the process


def book(code: Tensor, packed: Tensor | None, low: int, rows: int) -> Book | None:
    """A ``Book`` of an fp32 CPU map and ``CodeLookup.packed`` with its ``low``/``rows``; None without a table."""
    if packed is None or code.device.type != "cpu" or code.dtype != torch.float32:
        return None
    tensors = (code.contiguous(), packed.contiguous())
    _BOOKS.append(tensors)
    return Book(tensors[0].data_ptr(), tensors[1].data_ptr(), low, rows)


_P = ctypes.c_void_p
_I64 = ctypes.c_int64
_INT = ctypes.c_int
_SIGNATURES = {
    "thrifty_quantize": ((_P, _I64, _I64, _P, _P, _P, _INT), None),
    "thrifty_step8bit": ((_INT, _I64, _P, _P, _P, _P, _P, _P, _INT, _INT), _INT),
    "thrifty_step32bit": ((_INT, _I64, _P, _P, _P, _INT), _INT),
    "thrifty_squares_finite": ((_I64, _P, _P, _INT), _INT),
}

_state: dict[tuple[str, ...], tuple[ctypes.CDLL | None, float]] = {}  # per extra flags: library, seconds


def _extra_flags() -> tuple[str, ...] | None:
    """``$THRIFTY_NATIVE_CFLAGS`` as compiler arguments, or None when ``$THRIFTY_NATIVE`` turns the kernels off."""
    if os.environ.get("THRIFTY_NATIVE", "1").strip().lower() in ("0", "off", "false", "no"):
        return None
    return tuple(shlex.split(os.environ.get("THRIFTY_NATIVE_CFLAGS", "")))


def _cpu_key() -> str:
    """What ``-march=native`` depends on: the machine and, on Linux, the CPU's model and flags."""
    key = platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return key
    lines = [line for line in info.splitlines() if line.startswith(("model name", "flags", "Features"))]
    return key + "\n".join(sorted(set(lines)))


def _cache_dir() -> Path:
    return cache_root() / "native"


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


def _build(compiler: str, flags: tuple[str, ...]) -> Path:
    source = SOURCE.read_bytes()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    digest = hashlib.sha256(b"\0".join([source, " ".join(flags).encode(), version.encode(), _cpu_key().encode()]))
    name = f"thrifty_kernels-{digest.hexdigest()[:16]}.so"
    target = _cache_dir() / name
    if target.exists():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError:  # an unwritable cache (read-only home): build in the temporary directory instead
        target = (
            Path(tempfile.gettempdir())
            / f"thrifty-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
            / "native"
            / name
        )
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        result = subprocess.run(
            [compiler, *flags, str(SOURCE), "-o", partial, "-lm"], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {result.stderr.strip()[-2000:]}")
        os.replace(partial, target)  # atomic: a concurrent process sees the whole library or none
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


def library() -> ctypes.CDLL | None:
    """The loaded kernels, building them on the first call; None (after one warning) when they cannot be built."""
    extra = _extra_flags()
    if extra is None:
        return None
    if extra in _state:
        return _state[extra][0]
    lib = None
    start = time.perf_counter()
    try:
        compiler = _compiler()
        if compiler is None:
            raise RuntimeError("no C compiler found (set CC)")
        lib = ctypes.CDLL(str(_build(compiler, FLAGS + extra)))
        for name, (argtypes, restype) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = list(argtypes), restype
    except Exception as exc:  # noqa: BLE001 - any build or load failure falls back to torch paths
        warnings.warn(
            f"thrifty's native kernels are unavailable ({exc}); the fused paths use torch.compile kernels "
            "and the 8-bit optimizers' default path runs eagerly",
            RuntimeWarning,
            stacklevel=2,
        )
        lib = None
    _state[extra] = (lib, time.perf_counter() - start)
    return lib


def build_seconds() -> float | None:
    """Seconds the first ``library()`` call of this process took (build or cache hit), None before it."""
    extra = _extra_flags()
    return _state[extra][1] if extra in _state else None


KERNELS_8BIT = {"adam": 0, "sgd": 1}
KERNELS_32BIT = {"sgd_sai": 0, "diffgrad": 1}


def step8bit(
    lib: ctypes.CDLL,
    kernel: str,
    tensors: list[tuple[Tensor, ...]],
    blocks: list[int],
    books: tuple[Book, Book | None],
    hp: list[tuple[float, ...]],
    flags: int = 0,
) -> None:
    """One step of several tensors of an 8-bit optimizer in one call; ``tensors`` holds (param, grad,
    codes1, absmax1[, codes2, absmax2]) per parameter, all contiguous on the CPU."""
    ptrs = torch.tensor([[t.data_ptr() for t in ts] + [0] * (6 - len(ts)) for ts in tensors], dtype=torch.int64)
    sizes = torch.tensor([ts[0].numel() for ts in tensors], dtype=torch.int64)
    block_sizes = torch.tensor(blocks, dtype=torch.int64)
    hps = torch.tensor([list(h) + [0.0] * (8 - len(h)) for h in hp], dtype=torch.float32)
    second = ctypes.byref(books[1]) if books[1] is not None else None
    done = lib.thrifty_step8bit(
        KERNELS_8BIT[kernel],
        len(tensors),
        ptrs.data_ptr(),
        sizes.data_ptr(),
        block_sizes.data_ptr(),
        ctypes.byref(books[0]),
        second,
        hps.data_ptr(),
        flags,
        torch.get_num_threads(),
    )
    if not done:
        raise MemoryError("thrifty's native 8-bit step could not allocate its buffers (nothing was changed)")


def step32bit(lib: ctypes.CDLL, kernel: str, tensors: list[tuple[Tensor, ...]], hp: list[tuple[float, ...]]) -> None:
    """One step of several fp32 tensors of an elementwise optimizer in one call (``KERNELS_32BIT``'s layouts)."""
    ptrs = torch.tensor([[t.data_ptr() for t in ts] for ts in tensors], dtype=torch.int64)
    sizes = torch.tensor([ts[0].numel() for ts in tensors], dtype=torch.int64)
    hps = torch.tensor([list(h) + [0.0] * (8 - len(h)) for h in hp], dtype=torch.float32)
    done = lib.thrifty_step32bit(
        KERNELS_32BIT[kernel], len(tensors), ptrs.data_ptr(), sizes.data_ptr(), hps.data_ptr(), torch.get_num_threads()
    )
    if not done:
        raise MemoryError("thrifty's native step could not allocate its work list (nothing was changed)")


def squares_finite(lib: ctypes.CDLL, tensors: list[Tensor]) -> bool:
    """Whether every value of these contiguous fp32 CPU tensors has a finite fp32 square (|x| < 2^64: no NaN,
    no infinity), in one pass over OpenMP threads."""
    ptrs = torch.tensor([t.data_ptr() for t in tensors], dtype=torch.int64)
    sizes = torch.tensor([t.numel() for t in tensors], dtype=torch.int64)
    result = lib.thrifty_squares_finite(len(tensors), ptrs.data_ptr(), sizes.data_ptr(), torch.get_num_threads())
    if result < 0:
        raise MemoryError("thrifty's native finiteness check could not allocate its work list")
    return bool(result)


def usable(*tensors: Tensor) -> bool:
    """Whether the native kernels can update these tensors in place: contiguous fp32 on the CPU."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in tensors)
