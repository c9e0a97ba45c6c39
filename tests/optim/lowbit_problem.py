"""The float32 problem of the bitsandbytes 8-bit trajectory fixture, rebuilt from its seed, and a runner."""

from __future__ import annotations

import json
from pathlib import Path

import torch

FIXTURE = Path(__file__).parent / "fixtures" / "bnb_8bit_trajectories.json"
NAMES = ("W1", "b1", "W2", "b2")


def load_fixture() -> dict:
    return json.loads(FIXTURE.read_text())


def problem() -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Parameters [W1, b1, W2, b2] and data (x, y), drawn as the fixture's note says."""
    g = torch.Generator().manual_seed(2110)
    x = torch.randn(64, 66, generator=g)
    teacher = torch.randn(41, 66, generator=g) / 8
    y = torch.tanh(x @ teacher.T)
    w1 = torch.randn(100, 66, generator=g) / 8
    w2 = torch.randn(41, 100, generator=g) / 10
    params = [w1, torch.zeros(100), w2, torch.zeros(41)]
    return [p.requires_grad_(True) for p in params], x, y


def loss_fn(params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    w1, b1, w2, b2 = params
    return ((torch.tanh(x @ w1.T + b1) @ w2.T + b2 - y) ** 2).mean()


def run(make_optimizer, steps: int) -> tuple[list[float], list[torch.Tensor], torch.optim.Optimizer]:
    """Losses before each step and the final parameters of ``steps`` full-batch steps."""
    params, x, y = problem()
    opt = make_optimizer(params)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(params, x, y)
        losses.append(loss.item())
        loss.backward()
        opt.step()
    return losses, [p.detach() for p in params], opt


def deviation(
    run_fixture: dict, losses: list[float], params: list[torch.Tensor], subsample: int
) -> tuple[float, float]:
    """Largest relative loss gap over the steps, and relative L2 gap of the final (subsampled) parameters."""
    ref_loss = torch.tensor(run_fixture["loss"])
    loss_gap = ((torch.tensor(losses) - ref_loss).abs() / ref_loss).max().item()
    ours = torch.cat([p.reshape(-1)[::subsample] for p in params])
    ref = torch.cat([torch.tensor(run_fixture["final_subsampled"][n]) for n in NAMES])
    return loss_gap, ((ours - ref).norm() / ref.norm()).item()
