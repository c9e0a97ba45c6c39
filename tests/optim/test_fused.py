"""The ``fused=True`` paths (the native kernel, torch.compile where it does not apply) equal the reference paths;
compile failures fall back to eager."""

import copy as copy_module

import pytest
import torch

from thrifty.optim import DiffGrad, SGDSaI
from thrifty.optim._core import CompiledUpdate

CASES = [
    (DiffGrad, {"lr": 1e-2, "weight_decay": 0.1}),
    (DiffGrad, {"lr": 1e-2, "maximize": True}),
    (SGDSaI, {"lr": 1e-2, "weight_decay": 0.1}),
    (SGDSaI, {"lr": 1e-2, "momentum": 0.5, "maximize": True}),
]


def _params(dtype):
    gen = torch.Generator().manual_seed(0)
    shapes = [(7, 5), (5,), (3, 2, 2)]
    return [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]


def _run(cls, kwargs, dtype, steps=12, **path):
    params = [torch.nn.Parameter(p) for p in _params(dtype)]
    opt = cls(params, **kwargs, **path)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=dtype)
        opt.step()
    return params, opt


# float64 runs the torch.compile kernel (a first compile takes seconds: slow tier), float32 the native one.
@pytest.mark.parametrize(
    "dtype, tol",
    [
        pytest.param(torch.float64, 1e-12, marks=pytest.mark.slow, id="float64"),
        pytest.param(torch.float32, 1e-5, id="float32"),
    ],
)
@pytest.mark.parametrize("cls, kwargs", CASES)
def test_fused_matches_reference(cls, kwargs, dtype, tol):
    ref, _ = _run(cls, kwargs, dtype, foreach=False)
    fused, _ = _run(cls, kwargs, dtype, fused=True)
    for a, b in zip(ref, fused, strict=True):
        torch.testing.assert_close(b, a, rtol=tol, atol=tol)


@pytest.mark.parametrize("cls, kwargs", CASES[::2])
def test_fused_state_dict_round_trip(cls, kwargs):
    params, opt = _run(cls, kwargs, torch.float32, steps=5, fused=True)
    copy = [torch.nn.Parameter(p.detach().clone()) for p in params]
    resumed = cls(copy, **kwargs, fused=True)
    resumed.load_state_dict(copy_module.deepcopy(opt.state_dict()))  # as if read back from disk
    gen = torch.Generator().manual_seed(7)
    for _ in range(3):
        for a, b in zip(params, copy, strict=True):
            a.grad = torch.randn(a.shape, generator=gen)
            b.grad = a.grad.clone()
        opt.step()
        resumed.step()
    for a, b in zip(params, copy, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cls", [DiffGrad, SGDSaI])
def test_foreach_and_fused_together_are_rejected(cls):
    with pytest.raises(ValueError, match="foreach and fused"):
        cls([torch.nn.Parameter(torch.zeros(2))], foreach=True, fused=True)


def test_compile_failure_falls_back_to_eager(monkeypatch):
    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no compiler")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    calls = []
    update = CompiledUpdate(lambda x: calls.append(x.clone()) or x.add_(1))
    x = torch.zeros(3)
    with pytest.warns(RuntimeWarning, match="no compiler"):
        update(x)
    update(x)
    assert update.eager and torch.equal(x, torch.full((3,), 2.0)) and len(calls) == 2
    assert update.compile_seconds is not None


@pytest.mark.parametrize("name", ["diffgrad", "sgd_sai"])
def test_default_constructor_takes_the_native_kernel_on_fp32_cpu_tensors(name):
    """fused=None (the default) runs the native kernel where it applies: the same numbers as fused=True."""
    from thrifty import _native
    from thrifty.optim import create_optimizer

    if _native.library() is None:
        pytest.skip("no C compiler: the native kernels are unavailable")

    def trajectory(**kwargs):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
        opt = create_optimizer(model.parameters(), name, lr=1e-2, **kwargs)
        for step in range(5):
            torch.manual_seed(100 + step)
            opt.zero_grad()
            model(torch.randn(8, 16)).square().mean().backward()
            opt.step()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    default, fused, reference = trajectory(), trajectory(fused=True), trajectory(fused=False)
    assert torch.equal(default, fused)
    torch.testing.assert_close(default, reference, rtol=1e-5, atol=1e-6)
    assert torch.equal(trajectory(foreach=True), trajectory(fused=False, foreach=True))  # foreach asked by name
