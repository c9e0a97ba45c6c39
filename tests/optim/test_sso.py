"""SSO: the surrogate's gradient and upper bound, the SGD reduction, the line search, counts and bad input."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

from thrifty.optim.sso import SSO, surrogate_loss

F64 = torch.float64


def _data(seed: int = 0, n: int = 24, d: int = 5, k: int = 3):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=F64)
    y = torch.randint(0, k, (n,), generator=gen)
    return x, y


def _linear(seed: int = 0, d: int = 5, k: int = 3) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(d, k).to(F64)


def _ce(y: torch.Tensor):
    return lambda z: F.cross_entropy(z, y, reduction="sum")


def test_surrogate_gradient_at_theta_t_is_the_loss_gradient_over_eta() -> None:
    x, y = _data()
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).to(F64)
    params = list(model.parameters())
    outputs = model(x)
    loss_grads = torch.autograd.grad(_ce(y)(outputs), params)
    z_t = outputs.detach().clone().requires_grad_(True)
    (d,) = torch.autograd.grad(_ce(y)(z_t), z_t)
    eta = 3.0
    surrogate_grads = torch.autograd.grad(surrogate_loss(model(x), outputs.detach(), d, eta), params)
    n, k = outputs.shape
    # The proximity term has zero gradient at theta_t; the mean over n*k entries scales by 1/(n k).
    for s, g in zip(surrogate_grads, loss_grads, strict=True):
        torch.testing.assert_close(s, g / (eta * n * k), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("schedule", ["constant", "stochastic", "exponential"])
def test_one_fixed_inner_step_on_a_linear_model_is_sgd_with_the_derived_lr(schedule: str) -> None:
    eta, alpha, total = 0.5, 2.0, 20
    model, reference = _linear(), _linear()
    opt = SSO(model.parameters(), eta=eta, inner_steps=1, inner_lr=alpha, eta_schedule=schedule, total_steps=total)
    sgd = torch.optim.SGD(reference.parameters(), lr=1.0)
    for t in range(1, 9):
        x, y = _data(seed=t)
        opt.step(lambda m=model, x=x: m(x), _ce(y))
        n, k = x.shape[0], 3
        # theta_1 = theta_t - alpha * grad s(theta_t) = theta_t - alpha / (eta_t n k) * grad l(theta_t).
        for group in sgd.param_groups:
            group["lr"] = alpha / (opt.eta_at(t) * n * k)
        sgd.zero_grad()
        _ce(y)(reference(x)).backward()
        sgd.step()
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    expected = {"constant": eta, "stochastic": 2 * eta, "exponential": eta * 20**0.2}[schedule]
    assert opt.eta_at(4) == pytest.approx(expected)


@pytest.mark.parametrize(("eta", "holds"), [(2.0, True), (1.0, True), (0.25, False)])
def test_surrogate_upper_bounds_a_squared_loss_when_eta_is_at_least_l_over_two(eta: float, holds: bool) -> None:
    """l(z) = sum (z - y)^2 is L-smooth with L = 2 in z. Without the 1/2 the bound needs eta >= L / 2,
    so it holds when 1/eta <= 1/L (eta = 2) and at the edge (eta = 1), and fails below."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=gen, dtype=F64)
    y = torch.randn(16, 2, generator=gen, dtype=F64)
    model = _linear(d=4, k=2)
    z_t = model(x).detach()
    target = z_t.clone().requires_grad_(True)
    loss_t = ((target - y) ** 2).sum()
    (d,) = torch.autograd.grad(loss_t, target)
    nk = z_t.numel()
    gaps = []
    for _ in range(200):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen, dtype=F64) * 0.3)
            z = model(x)
            # The surrogate in loss units: l(z_t) + <d, z - z_t> + eta ||z - z_t||^2.
            bound = loss_t.detach() + eta * nk * surrogate_loss(z, z_t, d, eta) - (d * z_t).sum()
            gap = bound - ((z - y) ** 2).sum()
        gaps.append(float(gap))
    assert (min(gaps) >= -1e-9) == holds


def test_counts_one_output_gradient_per_outer_step() -> None:
    x, y = _data()
    model = _linear()
    calls = {"loss": 0}

    def loss_fn(z: torch.Tensor) -> torch.Tensor:
        calls["loss"] += 1
        return _ce(y)(z)

    opt = SSO(model.parameters(), eta=1.0, inner_steps=10)
    for _ in range(5):
        opt.step(lambda: model(x), loss_fn)
    assert calls["loss"] == 5
    assert opt.counts["output_grad_evals"] == 5
    assert opt.counts["surrogate_grad_evals"] == 50
    assert opt.counts["surrogate_evals"] >= 50


def test_line_search_decreases_the_surrogate_and_resets_each_outer_step() -> None:
    x, y = _data(n=40)
    model = _linear()
    opt = SSO(model.parameters(), eta=0.2, inner_steps=5, init_step_size=10.0)
    sizes = []
    for _ in range(4):
        z_t = model(x).detach()
        target = z_t.clone().requires_grad_(True)
        (d,) = torch.autograd.grad(_ce(y)(target), target)
        with torch.no_grad():
            values = [float(surrogate_loss(model(x), z_t, d, 0.2))]
        evals_before = opt.counts["surrogate_evals"]
        opt.step(lambda: model(x), _ce(y))
        with torch.no_grad():
            values.append(float(surrogate_loss(model(x), z_t, d, 0.2)))
        assert values[1] < values[0]
        assert opt.counts["surrogate_evals"] - evals_before >= 5
        sizes.append(opt.last_step_size)
    # The trial step restarts at 10 every outer step, so backtracking never compounds across steps.
    assert all(0 < s <= 10.0 for s in sizes)


def test_sso_lowers_the_loss_more_per_output_gradient_with_more_inner_steps() -> None:
    x, y = _data(n=64, d=8, k=4)
    finals = {}
    for m in (1, 10):
        model = _linear(d=8, k=4)
        opt = SSO(model.parameters(), eta=0.05, inner_steps=m)
        for _ in range(10):
            opt.step(lambda model=model: model(x), _ce(y))
        finals[m] = float(_ce(y)(model(x)).detach())
    assert finals[10] < finals[1]


def test_resume_from_state_dict_is_bit_identical() -> None:
    def run(model, opt, steps, start):
        for t in range(start, start + steps):
            x, y = _data(seed=t)
            opt.step(lambda x=x: model(x), _ce(y))
        return [p.detach().clone() for p in model.parameters()]

    options = {"eta": 0.3, "inner_steps": 3, "eta_schedule": "exponential", "total_steps": 10}
    model = _linear()
    full = run(model, SSO(model.parameters(), **options), 8, 0)

    model = _linear()
    opt = SSO(model.parameters(), **options)
    run(model, opt, 3, 0)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optim": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    model = _linear()
    model.load_state_dict(saved["model"])
    opt = SSO(model.parameters(), **options)
    opt.load_state_dict(saved["optim"])
    assert opt.counts["output_grad_evals"] == 3
    for a, b in zip(full, run(model, opt, 5, 3), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eta": 0.0}, r"eta must be in \(0, inf\]"),
        ({"inner_steps": 0}, r"inner_steps must be an integer in \[1, inf\)"),
        ({"eta_schedule": "cosine"}, "eta_schedule must be one of constant, stochastic, exponential"),
        ({"total_steps": 0}, r"total_steps must be an integer in \[1, inf\)"),
        ({"inner_lr": -1.0}, r"inner_lr must be in \(0, inf\]"),
        ({"c": 1.5}, r"c must be in \[0, 1\]"),
        ({"beta": 1.0}, r"beta must be in \(0, 1\)"),
        ({"expand": 0.5}, r"expand must be in \[1, inf\]"),
        ({"max_backtracks": 0}, r"max_backtracks must be an integer in \[1, inf\)"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SSO([torch.zeros(2, requires_grad=True)], **kwargs)


def test_one_param_group_only() -> None:
    with pytest.raises(ValueError, match="one param group"):
        SSO([{"params": [torch.zeros(2, requires_grad=True)]}, {"params": [torch.zeros(1, requires_grad=True)]}])
