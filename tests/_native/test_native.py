"""The native kernels: build, cache and fallbacks; their codes and steps equal the torch paths bit for bit."""

import ctypes
import platform
import warnings

import pytest
import torch

from thrifty import _native
from thrifty.compress.quant.blockwise import CodeLookup, dynamic_map, linear_map, nearest_code
from thrifty.optim import DiffGrad, SGDSaI
from thrifty.optim.diffgrad import _diffgrad_update
from thrifty.optim.sgd_sai import _sgd_sai_update

MAPS = {
    "dynamic_signed": lambda: dynamic_map(True),
    "dynamic_unsigned": lambda: dynamic_map(False),
    "linear_signed": lambda: linear_map(True),
    "linear_unsigned": lambda: linear_map(False),
}
# Extra compiler flags of the builds under test: the machine's best, and on x86 the AVX-512 loops without
# byte permutes and the plain C loops (each build is one library, cached for the session).
BUILDS = ["", "-mno-avx512vbmi", "-mno-avx512f"] if platform.machine() in ("x86_64", "AMD64") else [""]


@pytest.fixture(autouse=True)
def _fresh(monkeypatch, tmp_path_factory):
    """Each test loads the library anew (from the shared cache, so each build happens once per session)."""
    monkeypatch.setenv("THRIFTY_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "thrifty-cache"))
    monkeypatch.setattr(_native, "_state", {})


def _every_key(code):
    """Both ends and a random middle of every top-16-bit key, codes, midpoints and their neighbours, big values."""
    top = torch.arange(65536, dtype=torch.int64) << 16
    g = torch.Generator().manual_seed(8)
    low_bits = torch.cat([torch.tensor([0, 1, 0xFFFE, 0xFFFF]), torch.randint(0, 1 << 16, (1,), generator=g)])
    bits = (top[:, None] | low_bits[None, :]).view(-1)
    y = torch.where(bits >= 2**31, bits - 2**32, bits).to(torch.int32).view(torch.float32)
    mid = (code[:-1] + code[1:]) / 2
    big = torch.tensor([2.0, -2.0, 3.5, -1e30, 1e30, float("inf"), float("-inf")])
    y = torch.cat([y, code, -code, mid, mid.nextafter(torch.tensor(2.0)), mid.nextafter(torch.tensor(-2.0)), big])
    return y[~y.isnan()]


@pytest.mark.parametrize("cflags", BUILDS)
@pytest.mark.parametrize("name", list(MAPS))
def test_encode_equals_bucketize_on_every_key(monkeypatch, cflags, name):
    """thrifty_quantize with unit maxima finds bucketize's nearest code for every float key, ±inf included."""
    monkeypatch.setenv("THRIFTY_NATIVE_CFLAGS", cflags)
    lib = _native.library()
    assert lib is not None
    code = MAPS[name]()
    lookup = CodeLookup(code)
    book = _native.book(lookup.code, lookup.packed, *lookup.compact[2:])
    y = _every_key(code)
    for block in (256, 1000, y.numel()):  # partial blocks and one block for everything
        codes = torch.empty(y.numel(), dtype=torch.uint8)
        absmax = torch.ones(-(-y.numel() // block))
        lib.thrifty_quantize(y.data_ptr(), y.numel(), block, codes.data_ptr(), absmax.data_ptr(), ctypes.byref(book), 2)
        assert torch.equal(codes, nearest_code(y, code))
        assert torch.equal(absmax, torch.ones_like(absmax))


def test_library_is_cached_and_can_be_turned_off(monkeypatch):
    lib = _native.library()
    assert lib is not None and _native.build_seconds() is not None
    assert _native.library() is lib
    files = list(_native._cache_dir().glob("thrifty_kernels-*.so"))
    assert files
    monkeypatch.setattr(_native, "_state", {})
    before = {f: f.stat().st_mtime_ns for f in files}
    assert _native.library() is not None
    assert {f: f.stat().st_mtime_ns for f in files} == before  # loaded from the cache, not rebuilt
    monkeypatch.setenv("THRIFTY_NATIVE", "0")
    assert _native.library() is None


@pytest.mark.slow  # compiles the kernels from scratch (a gcc run) every time
def test_unwritable_cache_builds_in_the_temporary_directory(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    monkeypatch.setenv("THRIFTY_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(_native.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _native.library() is not None
    assert list((tmp_path / "tmp").glob("thrifty-*/native/thrifty_kernels-*.so"))


def test_missing_compiler_warns_once_and_returns_none(monkeypatch):
    monkeypatch.setattr(_native, "_compiler", lambda: None)
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        assert _native.library() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _native.library() is None


def test_compile_error_warns_and_returns_none(monkeypatch, tmp_path):
    broken = tmp_path / "kernels.c"
    broken.write_text("this is not C\n")
    monkeypatch.setattr(_native, "SOURCE", broken)
    with pytest.warns(RuntimeWarning, match="failed"):
        assert _native.library() is None
    assert not list(_native._cache_dir().glob("tmp*"))  # no partial library left behind


def test_usable_only_for_contiguous_fp32_cpu_tensors():
    x = torch.zeros(4, 4)
    assert _native.usable(x, x[0])
    assert not _native.usable(x.t())
    assert not _native.usable(x.double())
    assert not _native.usable(x.bfloat16())


@pytest.mark.parametrize("cflags", BUILDS)
@pytest.mark.parametrize("threads", [1, 2])
def test_sgd_sai_native_step_equals_the_eager_update(monkeypatch, cflags, threads):
    """The kernel is called by fused=True after the first step and computes _sgd_sai_update's numbers."""
    monkeypatch.setenv("THRIFTY_NATIVE_CFLAGS", cflags)
    g = torch.Generator().manual_seed(0)
    n = 70_001  # two threads' worth, with an odd tail
    p, grad, buf = (torch.randn(n, generator=g) for _ in range(3))
    hp = torch.tensor([0.9, 1 - 1e-4, 0.03, -1.0])
    expected_p, expected_buf = p.clone(), buf.clone()
    _sgd_sai_update(expected_p, grad, expected_buf, hp)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _native.step32bit(_native.library(), "sgd_sai", [(p, grad, buf)], [tuple(hp.tolist())])
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(p, expected_p) and torch.equal(buf, expected_buf)


def test_sgd_sai_fused_uses_the_native_kernel(monkeypatch):
    import thrifty.optim.sgd_sai as sgd_sai

    def fail(*args):
        raise AssertionError("the torch.compile kernel ran instead of the native one")

    monkeypatch.setattr(sgd_sai, "_FUSED_UPDATE", fail)
    p = torch.nn.Parameter(torch.randn(5000, generator=torch.Generator().manual_seed(9)))
    ref = torch.nn.Parameter(p.detach().clone())
    fused, eager = SGDSaI([p], lr=1e-2, fused=True), SGDSaI([ref], lr=1e-2, foreach=False)
    for step in range(3):
        p.grad = torch.randn(5000, generator=torch.Generator().manual_seed(step))
        ref.grad = p.grad.clone()
        fused.step()
        eager.step()
    torch.testing.assert_close(p, ref, rtol=1e-5, atol=1e-6)  # ulps apart: the reference adds with alpha


@pytest.mark.parametrize("cflags", BUILDS)
def test_diffgrad_native_step_matches_the_eager_update(monkeypatch, cflags):
    """Every operation as _diffgrad_update; only exp differs (Cephes polynomial with AVX-512, libm's expf without)."""
    monkeypatch.setenv("THRIFTY_NATIVE_CFLAGS", cflags)
    g = torch.Generator().manual_seed(1)
    n = 70_001
    p, grad, prev = (torch.randn(n, generator=g) for _ in range(3))
    prev[:100] = grad[:100] + torch.linspace(0, 200, 100)  # frictions from 0.5 up to exp underflow
    m, v = torch.randn(n, generator=g), torch.rand(n, generator=g)
    hp = torch.tensor([0.9, 0.999, 1e-3, 1e-8, 0.01, -1.0])
    expected = [t.clone() for t in (p, grad, m, v, prev)]
    _diffgrad_update(*expected, hp)
    _native.step32bit(_native.library(), "diffgrad", [(p, grad, m, v, prev)], [tuple(hp.tolist())])
    for got, want in zip((p, m, v, prev), (expected[0], *expected[2:]), strict=True):
        torch.testing.assert_close(got, want, rtol=2e-6, atol=1e-9)


@pytest.mark.parametrize("cflags", BUILDS)
def test_diffgrad_fused_uses_the_native_kernel(monkeypatch, cflags):
    import thrifty.optim.diffgrad as diffgrad

    def fail(*args):
        raise AssertionError("the torch.compile kernel ran instead of the native one")

    monkeypatch.setenv("THRIFTY_NATIVE_CFLAGS", cflags)
    monkeypatch.setattr(diffgrad, "_FUSED_UPDATE", fail)
    gen = torch.Generator().manual_seed(2)
    p = torch.nn.Parameter(torch.randn(300, 70, generator=gen))
    ref = torch.nn.Parameter(p.detach().clone())
    fused = DiffGrad([p], lr=1e-2, weight_decay=0.1, fused=True)
    eager = DiffGrad([ref], lr=1e-2, weight_decay=0.1, foreach=False)
    for _ in range(10):
        p.grad = torch.randn(p.shape, generator=gen)
        ref.grad = p.grad.clone()
        fused.step()
        eager.step()
    torch.testing.assert_close(p, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cflags", BUILDS)
def test_squares_finite_finds_every_nan_infinity_and_overflowing_square(monkeypatch, cflags):
    monkeypatch.setenv("THRIFTY_NATIVE_CFLAGS", cflags)
    lib = _native.library()
    below = torch.tensor(2.0**64).nextafter(torch.tensor(0.0)).item()  # the largest float whose square is finite
    tensors = [torch.randn(n).clamp(-1, 1) * below for n in (1, 17, 70_001, 300_000)]
    assert _native.squares_finite(lib, tensors)
    for bad in (float("nan"), float("inf"), float("-inf"), 2.0**64, -(2.0**64), 1e30):
        for t in range(len(tensors)):
            for position in (0, tensors[t].numel() - 1, tensors[t].numel() // 2):
                copies = [x.clone() for x in tensors]
                copies[t][position] = bad
                assert not _native.squares_finite(lib, copies)
    assert _native.squares_finite(lib, [torch.tensor([below, -below, 1e-45, -0.0])])
