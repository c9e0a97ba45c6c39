"""SGDSaI: hand-computed steps, the EMA-momentum SGD reduction, official-code trajectories, and the API."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch

from thrifty.optim._core import state_bytes
from thrifty.optim.sgd_sai import SGDSaI, gsnr

F64 = torch.float64


@pytest.fixture(scope="module")
def official(official_mlp) -> dict:
    return official_mlp.load("sgd_sai_official.json")


@pytest.fixture
def optimizer(official_mlp, official: dict):
    """``optimizer(params, **extra)``: SGDSaI over the fixture's two param groups."""
    return lambda params, **extra: official_mlp.build_optimizer(SGDSaI, official, params, **extra)


def _force_gsnr(opt: SGDSaI, value: float) -> None:
    """Freeze every parameter's g-SNR at ``value`` before its first step (it is then not computed)."""
    for group in opt.param_groups:
        for p in group["params"]:
            opt.state[p]["gsnr"] = value


def test_gsnr_is_norm_over_unbiased_std_plus_eps() -> None:
    g = torch.tensor([0.1, 0.3, 0.5], dtype=F64)
    # mean 0.3, unbiased variance (0.04 + 0 + 0.04) / 2 = 0.04, norm sqrt(0.35).
    assert gsnr(g, 1e-3) == pytest.approx(math.sqrt(0.35) / (0.2 + 1e-3), rel=1e-14)


@pytest.mark.parametrize("foreach", [False, True])
def test_three_hand_computed_steps(foreach: bool) -> None:
    p = torch.tensor([1.0, -2.0, 0.5], dtype=F64, requires_grad=True)
    opt = SGDSaI([p], lr=0.1, momentum=0.5, eps=0.0, weight_decay=0.1, foreach=foreach)
    scale = 0.1 * math.sqrt(0.35) / 0.2  # lr * g-SNR of the first gradient, frozen from then on
    decay = 1 - 0.1 * 0.1

    p.grad = torch.tensor([0.1, 0.3, 0.5], dtype=F64)
    opt.step()  # buf = g (not (1 - momentum) g)
    p1 = [decay * 1.0 - scale * 0.1, decay * -2.0 - scale * 0.3, decay * 0.5 - scale * 0.5]
    torch.testing.assert_close(p.detach(), torch.tensor(p1, dtype=F64), rtol=1e-13, atol=1e-15)

    p.grad = torch.tensor([-0.2, 0.1, 0.0], dtype=F64)
    opt.step()  # buf = 0.5 * (0.1, 0.3, 0.5) + 0.5 * (-0.2, 0.1, 0)
    p2 = [decay * p1[0] + scale * 0.05, decay * p1[1] - scale * 0.2, decay * p1[2] - scale * 0.25]
    torch.testing.assert_close(p.detach(), torch.tensor(p2, dtype=F64), rtol=1e-13, atol=1e-15)

    p.grad = torch.tensor([0.4, 0.4, 0.4], dtype=F64)
    opt.step()  # buf = 0.5 * (-0.05, 0.2, 0.25) + 0.5 * 0.4; g-SNR of this gradient would be inf
    p3 = [decay * p2[0] - scale * 0.175, decay * p2[1] - scale * 0.3, decay * p2[2] - scale * 0.325]
    torch.testing.assert_close(p.detach(), torch.tensor(p3, dtype=F64), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_unit_gsnr_without_decay_is_ema_momentum_sgd(
    official: dict, foreach: bool, momentum: float, official_mlp
) -> None:
    params, loss_fn = official_mlp.problem(official)
    opt = SGDSaI(params, lr=0.05, momentum=momentum, weight_decay=0.0, foreach=foreach)
    _force_gsnr(opt, 1.0)
    mine = official_mlp.train(opt, params, loss_fn, 15)
    assert all(("momentum_buffer" in opt.state[p]) == (momentum != 0) for p in params)

    params, loss_fn = official_mlp.problem(official)
    # torch's SGD starts the buffer at g and then applies buf = mu * buf + (1 - dampening) g.
    sgd = torch.optim.SGD(params, lr=0.05, momentum=momentum, dampening=momentum)
    theirs = official_mlp.train(sgd, params, loss_fn, 15)
    for a, b in zip(mine, theirs, strict=True):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=0)


@pytest.mark.parametrize("foreach", [False, True])
def test_matches_official_trajectory(official: dict, foreach: bool, official_mlp, optimizer) -> None:
    params, loss_fn = official_mlp.problem(official)
    trajectory = official_mlp.train(optimizer(params, foreach=foreach), params, loss_fn, official["steps"])
    for mine, theirs in zip(trajectory, official["trajectory"], strict=True):
        for name, p in zip(official_mlp.NAMES, mine, strict=True):
            torch.testing.assert_close(p, torch.tensor(theirs[name], dtype=F64), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_foreach_equals_reference(official: dict, momentum: float, official_mlp, optimizer) -> None:
    runs = []
    for foreach in (False, True):
        params, loss_fn = official_mlp.problem(official)
        opt = optimizer(params, foreach=foreach, momentum=momentum)
        runs.append(official_mlp.train(opt, params, loss_fn, 20))
    for a, b in zip(*runs, strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)  # the same operations in the same order: bit for bit


@pytest.mark.parametrize("foreach", [False, True])
def test_gsnr_is_frozen_after_the_first_step(foreach: bool) -> None:
    p = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=F64, requires_grad=True)
    opt = SGDSaI([p], lr=0.1, momentum=0.0, weight_decay=0.0, foreach=foreach)
    p.grad = torch.tensor([0.1, -0.3, 0.2, 0.05], dtype=F64)
    opt.step()
    frozen = opt.state[p]["gsnr"]
    assert frozen == gsnr(p.grad, 1e-8)
    for scale in (100.0, 1e-3):
        before = p.detach().clone()
        p.grad = scale * torch.tensor([5.0, 1.0, -2.0, 0.5], dtype=F64)
        opt.step()
        assert opt.state[p]["gsnr"] == frozen
        torch.testing.assert_close(p.detach(), before - 0.1 * frozen * p.grad, rtol=1e-14, atol=0)


@pytest.mark.parametrize("foreach", [False, True])
def test_a_parameter_first_seen_later_gets_its_gsnr_then(foreach: bool) -> None:
    a = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    b = torch.tensor([0.5, -0.5, 1.5], dtype=F64, requires_grad=True)
    opt = SGDSaI([a, b], lr=0.1, weight_decay=0.0, foreach=foreach)
    a.grad = torch.tensor([0.1, 0.2], dtype=F64)
    opt.step()
    assert b not in opt.state
    a.grad = torch.tensor([0.3, 0.1], dtype=F64)
    b.grad = torch.tensor([0.2, 0.4, -0.1], dtype=F64)
    opt.step()
    assert opt.state[b]["gsnr"] == gsnr(b.grad, 1e-8)
    assert torch.equal(opt.state[b]["momentum_buffer"], b.grad)


@pytest.mark.parametrize("foreach", [False, True])
def test_decoupled_weight_decay_with_zero_gradient(foreach: bool) -> None:
    p0 = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=F64)
    p = p0.clone().requires_grad_(True)
    opt = SGDSaI([p], lr=0.1, momentum=0.9, weight_decay=0.5, foreach=foreach)
    for _ in range(7):
        p.grad = torch.zeros_like(p)
        opt.step()
    assert opt.state[p]["gsnr"] == 0.0
    torch.testing.assert_close(p.detach(), p0 * (1 - 0.1 * 0.5) ** 7, rtol=1e-14, atol=0)


@pytest.mark.parametrize("foreach", [False, True])
def test_one_element_tensor_hazard_and_override(foreach: bool) -> None:
    """Unbiased std of one element is NaN -> 0, so g-SNR = |g| / eps (official behaviour)."""
    p = torch.tensor([0.5], dtype=F64, requires_grad=True)
    opt = SGDSaI([p], lr=1e-2, weight_decay=0.0, foreach=foreach)
    p.grad = torch.tensor([0.25], dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        opt.step()
    assert opt.state[p]["gsnr"] == 0.25 / 1e-8
    assert p.item() == pytest.approx(0.5 - 1e-2 * 0.25e8 * 0.25)

    q = torch.tensor([0.5], dtype=F64, requires_grad=True)
    opt = SGDSaI([q], lr=1e-2, weight_decay=0.0, foreach=foreach)
    opt.state[q]["gsnr"] = 1.0
    q.grad = torch.tensor([0.25], dtype=F64)
    opt.step()
    assert q.item() == pytest.approx(0.5 - 1e-2 * 0.25)


def test_state_is_one_tensor_per_parameter_half_of_adamw() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    params = list(model.parameters())
    sizes = sum(p.numel() * p.element_size() for p in params)
    opt = SGDSaI(params)
    adamw = torch.optim.AdamW(params)
    model(torch.randn(4, 5)).sum().backward()
    opt.step()
    adamw.step()
    for p in params:
        assert set(opt.state[p]) == {"gsnr", "momentum_buffer"}
        assert isinstance(opt.state[p]["gsnr"], float)
    assert state_bytes(opt) == sizes
    # AdamW: exp_avg and exp_avg_sq per parameter, plus a float32 step counter.
    assert state_bytes(adamw) == 2 * sizes + 4 * len(params)


def test_closure_is_evaluated_once() -> None:
    p = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    opt = SGDSaI([p])
    calls = []

    def closure() -> torch.Tensor:
        calls.append(1)
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 5.0
    assert len(calls) == 1


@pytest.mark.parametrize("foreach", [False, True])
def test_resume_from_state_dict_is_bit_identical(official: dict, foreach: bool, official_mlp) -> None:
    official_mlp.assert_resume_is_bit_identical(SGDSaI, official, foreach=foreach)


def test_loads_an_official_format_state_dict(official: dict, official_mlp, optimizer) -> None:
    """The official class stores g-SNR as a 0-dim tensor and saves no ``foreach``/``maximize``."""
    params, loss_fn = official_mlp.problem(official)
    opt = optimizer(params)
    official_mlp.train(opt, params, loss_fn, 3)
    state_dict = copy.deepcopy(opt.state_dict())
    for group in state_dict["param_groups"]:
        del group["foreach"], group["maximize"]
    for param_state in state_dict["state"].values():
        param_state["gsnr"] = torch.tensor(param_state["gsnr"], dtype=F64)
    expected = [opt.state[p]["gsnr"] for p in params]
    fresh = optimizer(params)
    fresh.load_state_dict(state_dict)
    assert [fresh.state[p]["gsnr"] for p in params] == expected
    assert all(g["foreach"] is None and g["maximize"] is False for g in fresh.param_groups)
    official_mlp.train(fresh, params, loss_fn, 1)


@pytest.mark.parametrize("foreach", [False, True])
def test_maximize_equals_minimizing_the_negated_loss(official: dict, foreach: bool, official_mlp, optimizer) -> None:
    runs = []
    for maximize in (False, True):
        params, loss_fn = official_mlp.problem(official)
        opt = optimizer(params, foreach=foreach, maximize=maximize)
        runs.append(official_mlp.train(opt, params, official_mlp.negated(loss_fn) if maximize else loss_fn, 10))
    for a, b in zip(*runs, strict=True):
        for x, y in zip(a, b, strict=True):
            torch.testing.assert_close(x, y, rtol=1e-14, atol=0)


def test_sparse_gradients_raise() -> None:
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = SGDSaI(emb.parameters())
    emb(torch.tensor([1, 4])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": -1e-2}, r"lr must be in \[0, inf\]"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
        ({"momentum": -0.1}, r"momentum must be in \[0, 1\)"),
        ({"eps": -1e-8}, r"eps must be in \[0, inf\]"),
        ({"weight_decay": -0.1}, r"weight_decay must be in \[0, inf\]"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SGDSaI([torch.zeros(2, requires_grad=True)], **kwargs)


def test_defaults_match_the_official_signature() -> None:
    opt = SGDSaI([torch.zeros(2, requires_grad=True)])
    assert {k: opt.defaults[k] for k in ("lr", "momentum", "eps", "weight_decay")} == {
        "lr": 1e-2,
        "momentum": 0.9,
        "eps": 1e-8,
        "weight_decay": 1e-2,
    }


def test_registered_in_factory() -> None:
    from thrifty.optim.factory import get_optimizer_class

    assert get_optimizer_class("sgd_sai") is SGDSaI
