import pytest
import torch
import torch.distributed as dist

from thrifty.distributed import spawn
from thrifty.distributed.seq_parallel import (
    RingSelfAttention,
    gather_sequence,
    reference_attention,
    ring_attention,
    shard_sequence,
)


def _full_problem(seed: int, n: int, causal: bool):
    g = torch.Generator().manual_seed(seed)
    q, k, v, dout = (torch.randn(2, 3, n, 8, generator=g, dtype=torch.float64) for _ in range(4))
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = reference_attention(*leaves, causal=causal)
    out.backward(dout)
    return (q, k, v, dout), out.detach(), [t.grad for t in leaves]


def _ring_matches_reference(rank: int, world: int, n: int, causal: bool, group=None, algorithm="online") -> float:
    (q, k, v, dout), ref_out, ref_grads = _full_problem(0, n, causal)
    local = [shard_sequence(t, dim=2, group=group).clone().requires_grad_() for t in (q, k, v)]
    out = ring_attention(*local, causal=causal, group=group, algorithm=algorithm)
    out.backward(shard_sequence(dout, dim=2, group=group))
    errors = [(out - shard_sequence(ref_out, dim=2, group=group)).abs().max()]
    errors += [
        (t.grad - shard_sequence(g, dim=2, group=group)).abs().max() for t, g in zip(local, ref_grads, strict=True)
    ]
    return max(e.item() for e in errors)


def _ring_checks(rank: int, world: int) -> dict[str, float | str]:
    """Every multi-process check in one process group (starting processes is the slow part)."""
    singletons = [dist.new_group([r]) for r in range(world)]  # every rank its own one-process group
    return {
        "causal": _ring_matches_reference(rank, world, 24, True),
        "non_causal": _ring_matches_reference(rank, world, 24, False),
        "one_process_group": _ring_matches_reference(rank, world, 6, True, group=singletons[rank]),
        "rsa_causal": _ring_matches_reference(rank, world, 24, True, algorithm="rsa"),
        "rsa_non_causal": _ring_matches_reference(rank, world, 24, False, algorithm="rsa"),
        "module": _module_matches(rank, world),
        "indivisible": _shard_indivisible(),
        "unequal": _unequal_shards(rank),
    }


@pytest.mark.slow
def test_ring_attention_matches_single_process_on_four_processes():
    for result in spawn(_ring_checks, 4):
        errors = {k: v for k, v in result.items() if isinstance(v, float)}
        assert len(errors) == 6 and max(errors.values()) < 1e-12, result
        assert "not divisible by the world size 4" in result["indivisible"]
        assert "same shape" in result["unequal"]


def test_one_process_without_group_is_plain_attention():
    (q, k, v, _), ref_out, _ = _full_problem(1, 10, True)
    assert torch.equal(ring_attention(q, k, v, causal=True), ref_out)
    assert torch.allclose(
        reference_attention(q, k, v, causal=True),
        torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True),
        atol=1e-12,
    )


def _module_matches(rank: int, world: int) -> float:
    torch.manual_seed(0)
    layer = RingSelfAttention(16, 4, causal=True).double()
    x = torch.randn(2, 12, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    full = x.clone().requires_grad_()
    y = gather_sequence(layer(shard_sequence(full)))
    y.square().sum().backward()
    grads = [p.grad.clone() for p in layer.parameters()] + [full.grad]
    for g in grads:  # each rank holds its chunk's share of every gradient
        dist.all_reduce(g)
    # reference on one process: torch's multi-head attention with the same weights
    mha = torch.nn.MultiheadAttention(16, 4, batch_first=True).double()
    with torch.no_grad():
        mha.in_proj_weight.copy_(layer.qkv.weight)
        mha.in_proj_bias.copy_(layer.qkv.bias)
        mha.out_proj.weight.copy_(layer.out.weight)
        mha.out_proj.bias.copy_(layer.out.bias)
    mask = torch.ones(12, 12, dtype=torch.bool).triu(1)
    x_ref = x.clone().requires_grad_()
    y_ref = mha(x_ref, x_ref, x_ref, attn_mask=mask, need_weights=False)[0]
    y_ref.square().sum().backward()
    ref_grads = [mha.in_proj_weight.grad, mha.in_proj_bias.grad, mha.out_proj.weight.grad, mha.out_proj.bias.grad]
    ref_grads.append(x_ref.grad)
    errors = [(y - y_ref).abs().max()]
    errors += [(a - b).abs().max() for a, b in zip(grads, ref_grads, strict=True)]
    return max(e.item() for e in errors)


def _shard_indivisible() -> str:
    try:
        shard_sequence(torch.zeros(1, 7, 4))
    except ValueError as e:
        return str(e)
    return "no error"


def _unequal_shards(rank: int) -> str:
    q = torch.zeros(1, 1, 3 + rank, 4)
    try:
        ring_attention(q, q, q)
    except ValueError as e:
        return str(e)
    return "no error"


def test_bad_shapes():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        RingSelfAttention(10, 3)
    with pytest.raises(ValueError, match="algorithm"):
        ring_attention(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), algorithm="flash")
    with pytest.raises(ValueError, match="expected"):
        RingSelfAttention(8, 2)(torch.zeros(2, 8))
