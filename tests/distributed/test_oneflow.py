import itertools

import pytest
import torch
from torch import nn

from thrifty.distributed import spawn
from thrifty.distributed.oneflow import (
    MATMUL_SIGNATURES,
    TensorParallelMLP,
    as_placement,
    boxing_collective,
    boxing_cost,
    choose_matmul_signature,
    matmul_sbp,
    sbp_name,
    to_global,
)

LAYOUTS = ["S(0)", "S(1)", "B", "P"]


def _global_from_full(full, sbp, mesh):
    """A global tensor with layout sbp whose logical value is full (P: random parts that sum to full)."""
    rank, p = mesh.get_local_rank(), mesh.size()
    if sbp == "B":
        local = full
    elif sbp == "P":
        g = torch.Generator().manual_seed(7)
        parts = [torch.randn(full.shape, generator=g, dtype=full.dtype) for _ in range(p - 1)]
        parts.append(full - sum(parts))
        local = parts[rank]
    else:
        local = full.chunk(p, dim=as_placement(sbp).dim)[rank]
    return to_global(local, sbp, mesh)


def _every_boxing(rank: int, world: int) -> dict[str, float]:
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    full = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    errors = {}
    for src, dst in itertools.product(LAYOUTS, LAYOUTS):
        x = _global_from_full(full.clone().requires_grad_(), src, mesh)
        y = to_global(x, dst)
        assert sbp_name(y.placements[0]) == dst
        value = (y.full_tensor() - full).abs().max().item()
        # gradients flow back through the boxing: d sum(w * y) / d x = w, boxed to the source layout
        leaf = _global_from_full(full, src, mesh).detach().requires_grad_()
        weight = torch.arange(24.0, dtype=torch.float64).reshape(4, 6)
        (to_global(leaf, dst).full_tensor() * weight).sum().backward()
        grad = (leaf.grad.full_tensor() - weight).abs().max().item()
        errors[f"{src}->{dst}"] = max(value, grad)
    return errors


def _all_checks(rank: int, world: int) -> dict:
    """Every multi-process check in one process group (starting processes is the slow part)."""
    return {
        "boxing": _every_boxing(rank, world),
        "matmul": _matmul_signatures(rank, world),
        "indivisible": _indivisible(rank, world),
        "tp_mlp": _tp_mlp(rank, world),
    }


@pytest.fixture(scope="module")
def two_process_results() -> list[dict]:
    return spawn(_all_checks, 2)


@pytest.mark.slow
def test_every_boxing_keeps_the_logical_tensor_and_its_gradient(two_process_results):
    for result in two_process_results:
        errors = result["boxing"]
        assert len(errors) == 16
        assert max(errors.values()) < 1e-12, errors


def _matmul_signatures(rank: int, world: int) -> dict[str, tuple[str, float]]:
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(4, 6, generator=g, dtype=torch.float64), torch.randn(6, 8, generator=g, dtype=torch.float64)
    out = {}
    for a, b in [*MATMUL_SIGNATURES, ("S(0)", "S(0)"), ("P", "P")]:  # valid ones and two DTensor must reshard
        y = _global_from_full(x, a, mesh) @ _global_from_full(w, b, mesh)
        out[f"{a},{b}"] = (sbp_name(y.placements[0]), (y.full_tensor() - x @ w).abs().max().item())
    return out


@pytest.mark.slow
def test_dtensor_propagation_agrees_with_the_matmul_signature_table(two_process_results):
    results = two_process_results[0]["matmul"]
    for (a, b), expected in MATMUL_SIGNATURES.items():
        layout, error = results[f"{a},{b}"]
        assert layout == expected, (a, b, layout)
        assert error < 1e-12
        assert matmul_sbp(a, b) == expected
    assert all(error < 1e-12 for _, error in results.values())  # invalid pairs: DTensor reshards, still correct


def test_boxing_cost_table():
    t = 1000.0
    assert boxing_cost("S(0)", "S(0)", t, 4) == 0
    assert boxing_cost("S(0)", "S(1)", t, 4) == pytest.approx(750.0)
    assert boxing_cost("S(1)", "B", t, 4) == 3000.0
    assert boxing_cost("P", "S(0)", t, 4) == 3000.0
    assert boxing_cost("P", "B", t, 4) == 6000.0
    for src, dst in [("B", "S(0)"), ("B", "P"), ("S(0)", "P"), ("B", "B"), ("P", "P")]:
        assert boxing_cost(src, dst, t, 4) == 0.0
    assert boxing_cost("P", "B", t, 2, dst_devices=3) == 6000.0
    assert boxing_cost("S(0)", "B", t, 2, dst_devices=3) == 3000.0
    assert boxing_cost("B", "S(1)", t, 2, dst_devices=3) == 1000.0
    assert boxing_collective("P", "S(1)") == "reduce-scatter"
    assert boxing_collective("S(0)", "S(0)") == "none"


def test_cheapest_matmul_signature():
    # activations split by rows, small weight replicated: data parallel needs no boxing at all
    assert choose_matmul_signature("S(0)", "B", 1e6, 1e3, 4) == (("S(0)", "B"), 0.0)
    # a partial activation and a row-split weight: (P, B) costs an all-gather of the weight only
    (sig, cost) = choose_matmul_signature("P", "S(0)", 1e6, 1e3, 4)
    assert sig == ("P", "B") and cost == 3e3


def test_bad_layouts():
    with pytest.raises(ValueError, match="not a valid SBP signature"):
        matmul_sbp("S(0)", "S(0)")
    with pytest.raises(ValueError, match="'S\\(i\\)', 'B' or 'P'"):
        as_placement("S0")
    with pytest.raises(ValueError, match="positive"):
        boxing_cost("B", "P", 10, 0)


def _indivisible(rank: int, world: int) -> str:
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    x = to_global(torch.ones(3, 4), "B", mesh)
    try:
        to_global(x, "S(0)")
    except ValueError as e:
        return str(e)
    return "no error"


@pytest.mark.slow
def test_indivisible_split_raises_before_communication(two_process_results):
    assert all("cannot split axis 0" in r["indivisible"] for r in two_process_results)


def _tp_mlp(rank: int, world: int) -> float:
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    torch.manual_seed(0)
    fc1, fc2 = nn.Linear(6, 8).double(), nn.Linear(8, 6).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    ref = fc2(nn.functional.gelu(fc1(x)))
    ref.square().sum().backward()
    mlp = TensorParallelMLP.from_dense(mesh, fc1, fc2)
    y = mlp(x)
    y.square().sum().backward()
    assert mlp.w1.placements[0] == as_placement("S(1)") and mlp.w2.placements[0] == as_placement("S(0)")
    errors = [(y - ref).abs().max()]
    for param, dense in ((mlp.w1, fc1.weight.grad.T), (mlp.b1, fc1.bias.grad), (mlp.w2, fc2.weight.grad.T)):
        errors.append((param.grad.full_tensor() - dense).abs().max())
    # b2 is replicated: every rank's gradient is the full one
    errors.append((mlp.b2.grad.to_local() - fc2.bias.grad).abs().max())
    return max(e.item() for e in errors)


@pytest.mark.slow
def test_tensor_parallel_mlp_matches_single_process(two_process_results):
    assert max(r["tp_mlp"] for r in two_process_results) < 1e-12
