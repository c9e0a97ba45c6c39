"""AdaGrad and AdaGradNorm: torch.optim.Adagrad equality, hand-computed steps, paths, resume and bad input."""

from __future__ import annotations

import io
import math

import pytest
import torch

from thrifty.optim._core import state_bytes
from thrifty.optim.adagrad import AdaGrad, AdaGradNorm

F64 = torch.float64
PATHS = [{"foreach": False, "fused": False}, {"foreach": True, "fused": False}, {"fused": True}, {}]


def _problem(seed: int = 0, dtype: torch.dtype = F64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 5, generator=gen, dtype=dtype)
    y = torch.randn(32, 2, generator=gen, dtype=dtype)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2)).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=dtype) * 0.5)
    return model, lambda: ((model(x) - y) ** 2).mean()


def _train(opt: torch.optim.Optimizer, model: torch.nn.Module, loss_fn, steps: int) -> list[list[torch.Tensor]]:
    trajectory = []
    for _ in range(steps):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
        trajectory.append([p.detach().clone() for p in model.parameters()])
    return trajectory


OPTIONS = [
    {"lr": 0.1},
    {"lr": 0.05, "lr_decay": 0.1, "weight_decay": 0.01, "initial_accumulator_value": 0.3, "eps": 1e-6},
    {"lr": 0.05, "maximize": True},
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("options", OPTIONS)
def test_adagrad_equals_torch_adagrad(path: dict, options: dict) -> None:
    model, loss_fn = _problem()
    torch_model, torch_loss_fn = _problem()
    if options.get("maximize"):
        loss_fn, torch_loss_fn = (lambda f=loss_fn: -f()), (lambda f=torch_loss_fn: -f())
    mine = _train(AdaGrad(model.parameters(), **options, **path), model, loss_fn, 25)
    theirs = _train(torch.optim.Adagrad(torch_model.parameters(), **options), torch_model, torch_loss_fn, 25)
    for a, b in zip(mine, theirs, strict=True):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_fused_path_is_bit_identical_to_torch_fused_adagrad(dtype: torch.dtype) -> None:
    model, loss_fn = _problem(1, dtype)
    torch_model, torch_loss_fn = _problem(1, dtype)
    options = {"lr": 0.05, "lr_decay": 0.01, "weight_decay": 0.01}
    mine = _train(AdaGrad(model.parameters(), fused=True, **options), model, loss_fn, 20)
    torch_opt = torch.optim.Adagrad(torch_model.parameters(), fused=True, **options)
    theirs = _train(torch_opt, torch_model, torch_loss_fn, 20)
    for a, b in zip(mine, theirs, strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)


def test_adagrad_state_dict_is_interchangeable_with_torch() -> None:
    model, loss_fn = _problem()
    torch_opt = torch.optim.Adagrad(model.parameters(), lr=0.1)
    _train(torch_opt, model, loss_fn, 3)
    opt = AdaGrad(model.parameters(), lr=0.1)
    opt.load_state_dict(torch_opt.state_dict())
    assert all(float(s["step"]) == 3 for s in opt.state.values())
    _train(opt, model, loss_fn, 1)
    assert state_bytes(opt) == sum(p.numel() * p.element_size() + 4 for p in model.parameters())


@pytest.mark.parametrize("foreach", [False, True])
def test_adagrad_norm_hand_computed_steps(foreach: bool) -> None:
    a = torch.tensor([1.0, -2.0], dtype=F64, requires_grad=True)
    b = torch.tensor([0.5], dtype=F64, requires_grad=True)
    opt = AdaGradNorm([a, b], lr=0.3, initial_accumulator_value=0.25, eps=0.0, foreach=foreach)
    # Step 1: ||g||^2 = 9 + 16 = 25 over both tensors, v = 25.25.
    a.grad = torch.tensor([3.0, 0.0], dtype=F64)
    b.grad = torch.tensor([4.0], dtype=F64)
    opt.step()
    s1 = 0.3 / math.sqrt(25.25)
    torch.testing.assert_close(a.detach(), torch.tensor([1.0 - 3 * s1, -2.0], dtype=F64), rtol=1e-15, atol=0)
    torch.testing.assert_close(b.detach(), torch.tensor([0.5 - 4 * s1], dtype=F64), rtol=1e-15, atol=0)
    # Step 2: only a has a gradient; ||g||^2 = 1 + 1 = 2, v = 27.25.
    b.grad = None
    a.grad = torch.tensor([1.0, -1.0], dtype=F64)
    opt.step()
    s2 = 0.3 / math.sqrt(27.25)
    torch.testing.assert_close(a.detach(), torch.tensor([1.0 - 3 * s1 - s2, -2.0 + s2], dtype=F64), rtol=1e-15, atol=0)
    group = opt.param_groups[0]
    assert group["accumulator"] == pytest.approx(27.25, rel=1e-15)
    assert group["step"] == 2
    assert AdaGradNorm.step_size(group) == pytest.approx(s2, rel=1e-15)


@pytest.mark.parametrize("foreach", [False, True])
def test_adagrad_norm_step_size_is_non_increasing_and_groups_are_separate(foreach: bool) -> None:
    model, loss_fn = _problem(2)
    layers = list(model.children())
    opt = AdaGradNorm(
        [{"params": layers[0].parameters()}, {"params": layers[2].parameters(), "lr": 0.02}],
        lr=0.1,
        foreach=foreach,
    )
    sizes = []
    for _ in range(30):
        opt.zero_grad()
        loss_fn().backward()
        expected = [sum(float(p.grad.norm()) ** 2 for p in g["params"]) for g in opt.param_groups]
        before = [g.get("accumulator", 0.0) for g in opt.param_groups]
        opt.step()
        for g, b, e in zip(opt.param_groups, before, expected, strict=True):
            assert g["accumulator"] == pytest.approx(b + e, rel=1e-12)
        sizes.append([AdaGradNorm.step_size(g) for g in opt.param_groups])
    for k in range(2):
        column = [s[k] for s in sizes]
        assert all(later <= earlier for earlier, later in zip(column, column[1:], strict=False))
    assert state_bytes(opt) == 0


def test_adagrad_norm_foreach_equals_reference() -> None:
    runs = []
    for foreach in (False, True):
        model, loss_fn = _problem(3)
        opt = AdaGradNorm(model.parameters(), lr=0.1, weight_decay=0.01, foreach=foreach)
        runs.append(_train(opt, model, loss_fn, 20))
    for a, b in zip(*runs, strict=True):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-13, atol=1e-15)


def test_adagrad_norm_maximize_equals_minimizing_the_negated_loss() -> None:
    runs = []
    for maximize in (False, True):
        model, loss_fn = _problem(4)
        opt = AdaGradNorm(model.parameters(), lr=0.1, maximize=maximize)
        runs.append(_train(opt, model, (lambda f=loss_fn: -f()) if maximize else loss_fn, 10))
    for a, b in zip(*runs, strict=True):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-14, atol=0)


@pytest.mark.parametrize(
    ("cls", "options"),
    [(AdaGrad, {"lr": 0.1, "foreach": False, "fused": False}), (AdaGrad, {"lr": 0.1}), (AdaGradNorm, {"lr": 0.1})],
)
def test_resume_from_state_dict_is_bit_identical(cls: type, options: dict) -> None:
    model, loss_fn = _problem(5)
    full = _train(cls(model.parameters(), **options), model, loss_fn, 12)

    model, loss_fn = _problem(5)
    opt = cls(model.parameters(), **options)
    _train(opt, model, loss_fn, 5)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optim": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)

    model, loss_fn = _problem(5)
    model.load_state_dict(saved["model"])
    opt = cls(model.parameters(), **options)
    opt.load_state_dict(saved["optim"])
    resumed = _train(opt, model, loss_fn, 7)
    for a, b in zip(full[5:], resumed, strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)


@pytest.mark.parametrize("cls", [AdaGrad, AdaGradNorm])
def test_sparse_gradients_raise(cls: type) -> None:
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = cls(emb.parameters())
    emb(torch.tensor([1, 4])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()


@pytest.mark.parametrize("cls", [AdaGrad, AdaGradNorm])
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -1e-3}, r"lr must be in \[0, inf\]"),
        ({"eps": -1e-8}, r"eps must be in \[0, inf\]"),
        ({"weight_decay": -0.1}, r"weight_decay must be in \[0, inf\]"),
        ({"initial_accumulator_value": -1.0}, r"initial_accumulator_value must be in \[0, inf\]"),
        ({"lr": float("nan")}, r"lr must be in \[0, inf\]"),
    ],
)
def test_invalid_hyperparameters_raise(cls: type, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cls([torch.zeros(2, requires_grad=True)], **kwargs)


def test_adagrad_specific_bad_input() -> None:
    with pytest.raises(ValueError, match=r"lr_decay must be in \[0, inf\]"):
        AdaGrad([torch.zeros(2, requires_grad=True)], lr_decay=-1.0)
    with pytest.raises(ValueError, match="foreach and fused"):
        AdaGrad([torch.zeros(2, requires_grad=True)], foreach=True, fused=True)


def test_registered_in_factory() -> None:
    from thrifty.optim.factory import create_optimizer, get_optimizer_class

    assert get_optimizer_class("adagrad") is AdaGrad
    assert get_optimizer_class("adagrad_norm") is AdaGradNorm
    assert isinstance(create_optimizer(torch.nn.Linear(2, 2), "adagrad_norm", lr=0.1), AdaGradNorm)
