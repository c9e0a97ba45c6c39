import pytest
import torch
from torch import nn

from thrifty.optim import (
    UnknownOptimizerError,
    create_optimizer,
    get_optimizer_class,
    list_optimizers,
    state_bytes,
)


def test_registry_lists_thrifty_and_torch_optimizers():
    names = list_optimizers()
    for name in ("adamw", "adam", "sgd", "soap", "sgd_sai", "diffgrad"):
        assert name in names
    sgds = list_optimizers("sgd*")
    assert {"sgd", "sgd_sai"} <= set(sgds) and all(n.startswith("sgd") for n in sgds) and "adamw" not in sgds
    assert get_optimizer_class("AdamW") is torch.optim.AdamW
    assert all(desc for _, desc in list_optimizers(with_description=True))


def test_unknown_name_lists_valid_names():
    with pytest.raises(UnknownOptimizerError, match="valid names: .*soap"):
        create_optimizer([torch.zeros(1, requires_grad=True)], "adamx")


def test_create_optimizer_splits_weight_decay_for_modules():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    opt = create_optimizer(model, "adamw", lr=0.01, weight_decay=0.1)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and all(p.ndim == 2 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and all(p.ndim == 1 for p in no_decay["params"])
    assert opt.defaults["lr"] == 0.01
    flat = create_optimizer(model, "adamw", weight_decay=0.1, no_decay_1d=False)
    assert len(flat.param_groups) == 1


def test_create_optimizer_accepts_params_and_groups():
    w = torch.zeros(2, 2, requires_grad=True)
    b = torch.zeros(2, requires_grad=True)
    opt = create_optimizer([{"params": [w]}, {"params": [b], "lr": 0.5}], "sgd", lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]


def test_state_bytes_counts_adamw_moments():
    p = nn.Parameter(torch.randn(100, 10))
    opt = torch.optim.AdamW([p])
    assert state_bytes(opt) == 0
    p.grad = torch.ones_like(p)
    opt.step()
    step_bytes = opt.state[p]["step"].untyped_storage().nbytes()
    assert state_bytes(opt) == 2 * 1000 * 4 + step_bytes
