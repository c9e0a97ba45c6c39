"""The small tanh MLP of the official-trajectory fixtures (diffGrad, SGD-SaI), shared by their tests.

A fixture stores the problem (data and initial parameters), the optimizer's two param groups and the
parameters after every step of the official code; these helpers rebuild and train the same problem.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import torch

NAMES = ("W1", "b1", "W2", "b2")
F64 = torch.float64


def load(name: str) -> dict:
    return json.loads((Path(__file__).parent / "fixtures" / name).read_text())


def options(spec: dict) -> dict:
    """Optimizer keyword arguments from JSON (lists back to tuples for ``betas``)."""
    return {k: tuple(v) if k == "betas" else v for k, v in spec.items()}


def build_optimizer(cls: type, official: dict, params: list[torch.Tensor], **extra) -> torch.optim.Optimizer:
    """The fixture's two groups: weights with the defaults, biases with ``group1``'s overrides."""
    spec = official["optimizer"]
    group1 = {"params": [params[1], params[3]], **options(spec["group1"])}
    return cls([{"params": [params[0], params[2]]}, group1], **{**options(spec["defaults"]), **extra})


def problem(official: dict, init: dict | None = None) -> tuple[list[torch.Tensor], Callable[[], torch.Tensor]]:
    """The fixture's MLP: leaf parameters (W1, b1, W2, b2) and a loss closure over its points."""
    spec = official["problem"]
    init = init or {k: torch.tensor(spec["init"][k], dtype=F64) for k in NAMES}
    params = [init[k].clone().requires_grad_(True) for k in NAMES]
    x = torch.tensor(spec["x"], dtype=F64)
    y = torch.tensor(spec["y"], dtype=F64)

    def loss_fn() -> torch.Tensor:
        w1, b1, w2, b2 = params
        return ((torch.tanh(x @ w1.T + b1) @ w2.T + b2 - y) ** 2).mean()

    return params, loss_fn


def negated(loss_fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    return lambda: -loss_fn()


def train(opt: torch.optim.Optimizer, params: list[torch.Tensor], loss_fn, steps: int) -> list[list[torch.Tensor]]:
    """Parameters after each of ``steps`` steps."""
    trajectory = []
    for _ in range(steps):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
        trajectory.append([p.detach().clone() for p in params])
    return trajectory


def assert_resume_is_bit_identical(cls: type, official: dict, **extra) -> None:
    """Train 20 steps; separately train 8, save to bytes, load into fresh objects, train 12: equal bits."""
    params, loss_fn = problem(official)
    full = train(build_optimizer(cls, official, params, **extra), params, loss_fn, 20)

    params, loss_fn = problem(official)
    opt = build_optimizer(cls, official, params, **extra)
    train(opt, params, loss_fn, 8)
    buffer = io.BytesIO()
    torch.save({"params": [p.detach() for p in params], "optim": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)

    params, loss_fn = problem(official, dict(zip(NAMES, saved["params"], strict=True)))
    opt = build_optimizer(cls, official, params, **extra)
    opt.load_state_dict(saved["optim"])
    resumed = train(opt, params, loss_fn, 12)
    for a, b in zip(full[8:], resumed, strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)
