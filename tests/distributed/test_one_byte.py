import math

import pytest
import torch
import torch.distributed as dist
from torch import nn

from thrifty.distributed import spawn
from thrifty.distributed.one_byte import SharedSeedSPSA, dequantize_int8, quantize_int8, step_seed


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


def _replica_run(rank: int, world_size: int, steps: int) -> tuple[list[float], float, float, int, int, str]:
    """Count the collectives of a matching construction, try a mismatched seed, then train ``steps`` steps."""
    calls = []
    original = dist.all_gather
    dist.all_gather = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        SharedSeedSPSA(_tiny_model(), lr=0.1, seed=1)
    finally:
        dist.all_gather = original
    message = ""
    try:
        SharedSeedSPSA(_tiny_model(), lr=0.1, seed=3 if rank == 2 else 1)
    except ValueError as error:
        message = str(error)
    torch.manual_seed(100 + rank)  # each process has its own data
    x, y = torch.randn(256, 6), torch.randint(0, 3, (256,))
    model = _tiny_model()
    opt = SharedSeedSPSA(model, lr=0.05, eps=1e-3, clip=2.0, seed=7)
    with torch.no_grad():
        start = float(nn.functional.cross_entropy(model(x), y))
    for t in range(steps):
        idx = torch.arange(16) + (16 * t) % 240
        opt.step(lambda idx=idx: nn.functional.cross_entropy(model(x[idx]), y[idx]))
    with torch.no_grad():
        end = float(nn.functional.cross_entropy(model(x), y))
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    return flat.tolist(), start, end, opt.bytes_sent, len(calls), message


@pytest.fixture(scope="module")
def four_processes():
    return spawn(_replica_run, 4, 100, timeout_s=240)


@pytest.mark.slow
def test_replicas_stay_bit_identical_after_100_steps_on_4_processes(four_processes):
    flats = torch.tensor([r[0] for r in four_processes])
    assert (flats - flats[0]).abs().max().item() == 0.0
    assert all(r[3] == 100 for r in four_processes)  # one int8 byte sent per step per process
    assert sum(r[2] for r in four_processes) < sum(r[1] for r in four_processes)  # the shared model improved


@pytest.mark.slow
def test_agreement_is_one_collective_and_mismatched_seeds_fail_on_every_rank_at_construction(four_processes):
    assert [r[4] for r in four_processes] == [1, 1, 1, 1]
    expected = "shared seed differs across ranks: rank 0 has 1, rank 1 has 1, rank 2 has 3, rank 3 has 1"
    assert all(r[5].startswith(expected) for r in four_processes)


def test_in_place_perturbation_restores_parameters_exactly():
    model = _tiny_model()
    with torch.no_grad():
        model[0].weight.mul_(37.0)  # entries of very different magnitudes in one tensor
        model[2].bias.zero_()
    opt = SharedSeedSPSA(model, lr=0.1, eps=1e-2)
    snapshot = [p.detach().clone() for p in model.parameters()]
    for seed in range(20):
        opt.perturb(seed, 1)
        assert not torch.equal(model[0].weight, snapshot[0])
        opt.perturb(seed, -2)
        opt.perturb(seed, 1)
    assert all(torch.equal(a, b) for a, b in zip(snapshot, model.parameters(), strict=True))
    # plain fp32 additions would not come back exactly: the grid is what makes it exact
    w, z = torch.randn(10_000) * 3, torch.randn(10_000)
    assert not torch.equal(w.clone().add_(z, alpha=1e-2).add_(z, alpha=-2e-2).add_(z, alpha=1e-2), w)


def test_snapping_at_construction_moves_parameters_by_at_most_half_a_grid_step():
    model = _tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    opt = SharedSeedSPSA(model, lr=0.1)
    for b, p, g in zip(before, model.parameters(), opt._grids, strict=True):
        assert (b - p).abs().max().item() <= g / 2
        assert g <= 2.0**-23 * (2 * b.abs().max().item() + 1)


def test_regenerated_perturbation_is_bitwise_identical_and_seeds_differ_by_step_and_rank():
    opt = SharedSeedSPSA(_tiny_model(), lr=0.1)
    s = step_seed(5, 3, 1)
    assert all(torch.equal(a, b) for a, b in zip(opt.perturbation(s), opt.perturbation(s), strict=True))
    seeds = {step_seed(5, t, k) for t in range(50) for k in range(8)}
    assert len(seeds) == 400 and all(0 <= v < 2**63 for v in seeds)
    assert step_seed(5, 3, 1) != step_seed(6, 3, 1)


def test_int8_quantisation_error_is_within_clip_over_255():
    clip = 3.0
    values = torch.linspace(-clip, clip, 10_001)
    codes = quantize_int8(values, clip)
    assert codes.dtype == torch.int8 and codes.min() == -128 and codes.max() == 127
    assert (dequantize_int8(codes, clip) - values).abs().max().item() <= clip / 255 + 1e-6
    assert dequantize_int8(quantize_int8(torch.tensor([50.0]), clip), clip).item() == pytest.approx(
        127 * 2 * clip / 255
    )


def test_spsa_estimate_points_along_the_gradient():
    torch.manual_seed(1)
    a = torch.randn(10, 10)
    h = a @ a.T / 10 + torch.eye(10)
    theta = nn.Parameter(torch.randn(10))
    opt = SharedSeedSPSA([theta], lr=0.1, eps=1e-3)
    loss = lambda: 0.5 * theta @ h @ theta  # noqa: E731
    grad = h @ theta.detach()
    estimate = torch.zeros(10)
    for seed in range(3_000):
        estimate += opt.projected_gradient(loss, seed) * opt.perturbation(seed)[0]
    cosine = torch.nn.functional.cosine_similarity(estimate / 3_000, grad, dim=0).item()
    assert cosine > 0.95


def test_single_process_step_matches_the_rule():
    model = _tiny_model()
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    opt = SharedSeedSPSA(model, lr=0.2, eps=1e-3, clip=4.0, quantize=False)
    before = [p.detach().clone() for p in model.parameters()]
    loss = lambda: nn.functional.cross_entropy(model(x), y)  # noqa: E731
    p = opt.step(loss)
    z = opt.perturbation(step_seed(0, 0, 0))
    for b, q, zi, g in zip(before, model.parameters(), z, opt._grids, strict=True):
        expected = torch.round((b - 0.2 * p * zi) / g) * g
        assert torch.allclose(q, expected, atol=g)
    assert opt.bytes_per_step == 4 and opt.bytes_sent == 4 and math.isfinite(p)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": 0.0}, "lr"),
        ({"lr": 0.1, "eps": -1.0}, "eps"),
        ({"lr": 0.1, "clip": math.inf}, "clip"),
        ({"lr": 0.1, "seed": -1}, "seed"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SharedSeedSPSA(_tiny_model(), **kwargs)
