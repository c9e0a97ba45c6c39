import pytest
import torch
import torch.distributed as dist

from thrifty.distributed import spawn
from thrifty.distributed.tensor_parallel import TensorParallelSelfAttention

E, H = 16, 4


def _reference(seed: int, causal: bool, n: int = 10):
    """torch's multi-head attention on one process (float64): the input, its output, the gradients."""
    torch.manual_seed(seed)
    mha = torch.nn.MultiheadAttention(E, H, batch_first=True).double()
    g = torch.Generator().manual_seed(seed + 1)
    x, dout = torch.randn(2, 2, n, E, dtype=torch.float64, generator=g)
    x_ref = x.clone().requires_grad_()
    mask = torch.ones(n, n, dtype=torch.bool).triu(1) if causal else None
    y = mha(x_ref, x_ref, x_ref, attn_mask=mask, need_weights=False)[0]
    y.backward(dout)
    return mha, x, dout, y.detach(), x_ref.grad


def _tp_error(causal: bool, group=None) -> float:
    """Largest difference of the tensor-parallel layer (output, input gradient, every weight gradient, this rank's
    slices) from the single-process layer."""
    mha, x, dout, y_ref, dx_ref = _reference(0, causal)
    layer = TensorParallelSelfAttention(E, H, causal=causal, group=group).double()
    layer.load_full(mha.in_proj_weight, mha.in_proj_bias, mha.out_proj.weight, mha.out_proj.bias)
    xl = x.clone().requires_grad_()
    y = layer(xl)
    y.backward(dout)
    rows = layer._rows()
    local = layer.local_heads * layer.head_dim
    cols = slice(layer.rank * local, (layer.rank + 1) * local)
    pairs = [
        (y, y_ref),
        (xl.grad, dx_ref),
        (layer.qkv.weight.grad, mha.in_proj_weight.grad[rows]),
        (layer.qkv.bias.grad, mha.in_proj_bias.grad[rows]),
        (layer.out.weight.grad, mha.out_proj.weight.grad[:, cols]),
        (layer.out_bias.grad, mha.out_proj.bias.grad),
    ]
    return max((a - b).abs().max().item() for a, b in pairs)


def _tp_checks(rank: int, world: int) -> dict[str, float | str]:
    pairs = dist.new_group([0, 1]), dist.new_group([2, 3])  # every rank takes part in creating every group
    try:
        TensorParallelSelfAttention(E, 2)  # 2 heads over 4 ranks
        fewer_heads = "no error"
    except ValueError as e:
        fewer_heads = str(e)
    return {
        "causal": _tp_error(True),
        "non_causal": _tp_error(False),
        "two_of_four": _tp_error(True, group=pairs[rank // 2]),
        "fewer_heads": fewer_heads,
    }


@pytest.mark.slow
def test_tensor_parallel_attention_matches_single_process_on_four_processes():
    for result in spawn(_tp_checks, 4):
        errors = {k: v for k, v in result.items() if isinstance(v, float)}
        assert len(errors) == 3 and max(errors.values()) < 1e-12, result
        assert "more ranks than heads" in result["fewer_heads"]


def test_one_process_is_plain_multi_head_attention():
    assert _tp_error(True) < 1e-12
    assert _tp_error(False) < 1e-12


def test_bad_arguments():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        TensorParallelSelfAttention(10, 3)
    with pytest.raises(ValueError, match="expected"):
        TensorParallelSelfAttention(8, 2)(torch.zeros(2, 8))
    with pytest.raises(ValueError, match="weights"):
        TensorParallelSelfAttention(8, 2).load_full(torch.zeros(8, 8), None, torch.zeros(8, 8), None)
