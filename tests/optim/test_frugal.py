from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from thrifty.optim import FRUGAL, create_optimizer, frugal_param_groups, state_bytes
from thrifty.optim.frugal import project_down

torch.set_num_threads(1)

X = torch.randn(64, 12, generator=torch.Generator().manual_seed(1))
Y = torch.randn(64, 6, generator=torch.Generator().manual_seed(2))


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 32), nn.Tanh(), nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 6))


def _step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    opt.zero_grad()
    ((model(X) - Y) ** 2).mean().backward()
    opt.step()


def _groups(model: nn.Module) -> list[dict]:
    """Linear weights projectable, biases not (the split of frugal_param_groups without a head)."""
    weights = [m.weight for m in model if isinstance(m, nn.Linear)]
    biases = [m.bias for m in model if isinstance(m, nn.Linear)]
    return [{"params": weights, "projectable": True}, {"params": biases, "projectable": False}]


@pytest.mark.parametrize("proj_type", ["svd", "random", "block"])
def test_density_one_without_state_free_rule_is_adamw(proj_type):
    # torch.optim.AdamW's per-tensor path: eps added to sqrt(v) / sqrt(1 - beta2^t), step size
    # lr / (1 - beta1^t), p *= 1 - lr * wd before the update. Exact equality, across refreshes (T = 3).
    a, b = _model(), _model()
    ref = torch.optim.AdamW(a.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1, foreach=False)
    opt = FRUGAL(
        _groups(b),
        lr=1e-2,
        betas=(0.9, 0.95),
        weight_decay=0.1,
        density=1.0,
        update_gap=3,
        proj_type=proj_type,
        inactive_update_rule="no",
    )
    for _ in range(10):
        _step(a, ref)
        _step(b, opt)
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            assert torch.equal(p, q)


@pytest.mark.parametrize("proj_type", ["svd", "random", "block"])
def test_density_zero_with_sgd_rule_is_sgd(proj_type):
    a, b = _model(), _model()
    weights_a = [m.weight for m in a if isinstance(m, nn.Linear)]
    ref = torch.optim.SGD(weights_a, lr=0.05)  # FRUGAL lr 0.1 x inactive_lr_scale 0.5
    opt = FRUGAL(
        [m.weight for m in b if isinstance(m, nn.Linear)],
        lr=0.1,
        weight_decay=0.0,
        density=0.0,
        inactive_lr_scale=0.5,
        projectable=True,
        proj_type=proj_type,
        inactive_update_rule="sgd",
    )
    for _ in range(5):
        _step(a, ref)
        _step(b, opt)
    for p, q in zip(weights_a, [m.weight for m in b if isinstance(m, nn.Linear)], strict=True):
        assert torch.equal(p, q)
    assert state_bytes(opt) == 0


@pytest.mark.parametrize("proj_type", ["svd", "random"])
@pytest.mark.parametrize("shape", [(32, 12), (12, 32)])
def test_state_free_update_is_orthogonal_to_the_subspace(proj_type, shape):
    # The "sgd" and "no" rules differ by exactly -lr * R, so the residual R can be read off the weights.
    torch.manual_seed(0)
    w0 = torch.randn(shape)
    grad = torch.randn(shape)
    after = {}
    for rule in ("sgd", "no"):
        w = nn.Parameter(w0.clone())
        w.grad = grad.clone()
        opt = FRUGAL(
            [w], lr=0.1, weight_decay=0.0, density=0.25, proj_type=proj_type, inactive_update_rule=rule, seed=3
        )
        opt.step()
        after[rule] = w.detach().clone()
        projection = opt.state[w]["projection"]
    residual = (after["no"] - after["sgd"]) / 0.1
    side = "right" if shape[0] >= shape[1] else "left"
    assert projection.shape == ((3, 12) if side == "right" else (12, 3))
    assert residual.norm() > 0.5 * grad.norm()
    assert project_down(residual, projection, side).norm() < 1e-5 * residual.norm()

    w = nn.Parameter(w0.clone())
    w.grad = grad.clone()
    FRUGAL([w], lr=0.1, weight_decay=0.0, density=0.25, proj_type=proj_type, seed=3).step()  # sign_sgd
    torch.testing.assert_close(after["no"] - w.detach(), 0.1 * residual.sign(), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("proj_side", "basis", "moments"),
    [
        ("std", (12, 3), (3, 32)),
        ("left", (12, 3), (3, 32)),
        ("reverse_std", (8, 32), (12, 8)),
        ("right", (8, 32), (12, 8)),
    ],
)
def test_projection_side_and_rank(proj_side, basis, moments):
    # GaLoreProjector's sides for a 12 x 32 weight at density 0.25: std projects the smaller side.
    w = nn.Parameter(torch.zeros(12, 32))
    w.grad = torch.randn(12, 32)
    opt = FRUGAL([w], density=0.25, proj_side=proj_side)
    opt.step()
    assert opt.state[w]["projection"].shape == basis
    assert opt.state[w]["exp_avg"].shape == moments


def test_state_is_reset_when_the_subspace_changes():
    model = _model()
    opt = FRUGAL(_groups(model), lr=1e-2, density=0.25, update_gap=3, betas=(0.9, 0.95))
    w = model[2].weight  # 16 x 32: left side, r = 4
    for _ in range(3):
        _step(model, opt)
    state = opt.state[w]
    assert state["step"] == 3
    old_projection = state["projection"].clone()
    _step(model, opt)  # group step 3 % T == 0: new subspace from this gradient, fresh moments
    new_projection = state["projection"]
    assert state["step"] == 1
    assert not torch.allclose(old_projection, new_projection)
    u, _, _ = torch.linalg.svd(w.grad)
    assert torch.allclose((new_projection.T @ u[:, :4]).abs().sum(0), torch.ones(4), atol=1e-4)
    low = project_down(w.grad, new_projection, "left")
    torch.testing.assert_close(state["exp_avg"], 0.1 * low)
    torch.testing.assert_close(state["exp_avg_sq"], 0.05 * low**2)
    bias = model[2].bias  # non-projectable: plain AdamW, never reset
    assert opt.state[bias]["step"] == 4

    kept = _model()
    opt = FRUGAL(_groups(kept), lr=1e-2, update_gap=3, reset_statistics=False)
    for _ in range(4):
        _step(kept, opt)
    assert opt.state[kept[2].weight]["step"] == 4


def test_block_mode_redraws_active_tensors_and_frees_the_rest():
    model = nn.Sequential(*[nn.Linear(8, 8, bias=False) for _ in range(8)])
    weights = list(model.parameters())
    opt = FRUGAL(weights, lr=1e-3, density=0.25, update_gap=2, proj_type="block", projectable=True, seed=0)
    x = torch.randn(4, 8)
    draws = []
    for _ in range(8):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
        active = [i for i, p in enumerate(weights) if opt.state[p]["active"]]
        assert len(active) == 2
        for i, p in enumerate(weights):
            assert ("exp_avg" in opt.state[p]) == (i in active)
        draws.append(tuple(active))
    assert draws[0] == draws[1] and len(set(draws)) > 1
    assert state_bytes(opt) == 2 * 2 * 64 * 4


def test_state_bytes_match_the_formula():
    model = _model()  # weights 32x12 (right, r=3), 16x32 (left, r=4), 6x16 (left, r=round(1.5)=2)
    opt = FRUGAL(_groups(model), lr=1e-3, density=0.25)
    _step(model, opt)
    expected = 0
    for m, n in [(32, 12), (16, 32), (6, 16)]:
        r = round(0.25 * min(m, n))
        expected += 2 * r * max(m, n) + r * min(m, n)  # moments in subspace coordinates + the basis
    expected += 2 * (32 + 16 + 6)  # biases: full AdamW
    assert state_bytes(opt) == 4 * expected

    dense = torch.optim.AdamW(model.parameters())
    _step(model, dense)
    assert state_bytes(opt) < 0.5 * state_bytes(dense) - 3 * 4 * 3  # AdamW's step tensors included

    model = _model()
    opt = FRUGAL(_groups(model), lr=1e-3, density=1 / 3, proj_type="block", seed=1)
    _step(model, opt)
    active = [p for p in model.parameters() if opt.state[p].get("active")]
    assert len(active) == 1
    assert state_bytes(opt) == 4 * (2 * active[0].numel() + 2 * (32 + 16 + 6))


@pytest.mark.parametrize("proj_type", ["svd", "random", "block"])
def test_state_dict_round_trip_resumes_bit_identically(proj_type):
    model = _model()
    kwargs = dict(lr=1e-2, density=0.5, update_gap=2, proj_type=proj_type, inactive_update_rule="sign_sgd")
    opt = FRUGAL(_groups(model), **kwargs)
    for _ in range(3):
        _step(model, opt)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    for _ in range(5):
        _step(model, opt)

    resumed = _model(seed=7)
    resumed.load_state_dict(saved_model)
    opt2 = FRUGAL(_groups(resumed), **kwargs)  # a different seed: the saved generator state must win
    opt2.load_state_dict(saved_opt)
    for _ in range(5):
        _step(resumed, opt2)
    for p, q in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lr": -1.0}, "lr"),
        ({"betas": (0.9, 1.0)}, "betas"),
        ({"eps": -1e-8}, "eps"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"density": 1.5}, "density"),
        ({"density": -0.1}, "density"),
        ({"update_gap": 0}, "update_gap"),
        ({"update_gap": 2.5}, "update_gap"),
        ({"proj_type": "qr"}, "proj_type"),
        ({"proj_side": "top"}, "proj_side"),
        ({"inactive_update_rule": "lion"}, "inactive_update_rule"),
        ({"inactive_lr_scale": -1.0}, "inactive_lr_scale"),
        ({"proj_params_lr_scale": -1.0}, "proj_params_lr_scale"),
        ({"projectable": "yes"}, "projectable"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name}\b.*(must|\[)"):
        FRUGAL(_model().parameters(), **kwargs)


def test_projectable_tensors_must_be_matrices_outside_block_mode():
    with pytest.raises(ValueError, match="2-D"):
        FRUGAL([{"params": [nn.Parameter(torch.zeros(3))], "projectable": True}])
    FRUGAL([{"params": [nn.Parameter(torch.zeros(3))], "projectable": True}], proj_type="block")


class _TinyLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(10, 8)
        self.fc = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 10, bias=False)


def test_frugal_param_groups_pick_linear_weights_but_not_the_head():
    model = _TinyLM()
    groups = frugal_param_groups(model)
    assert groups[0]["projectable"] and groups[0]["params"] == [model.fc.weight]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.parameters() if p is not model.fc.weight}
    model.head.weight = model.tok.weight  # tied: stays on AdamW
    assert frugal_param_groups(model)[0]["params"] == [model.fc.weight]


def test_create_optimizer_projects_two_dimensional_tensors():
    model = _TinyLM()
    opt = create_optimizer(model, "frugal", lr=1e-3, weight_decay=0.01, density=0.25)
    model.head(model.norm(model.fc(model.tok(torch.tensor([[1, 2, 3]]))))).sum().backward()
    opt.step()
    projected = {id(p) for p in model.parameters() if "projection" in opt.state[p]}
    assert projected == {id(model.tok.weight), id(model.fc.weight), id(model.head.weight)}
