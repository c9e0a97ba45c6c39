"""GhostBatchNorm against nn.BatchNorm and per-chunk normalization; convert_ghost_bn; regime_adaptation."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from thrifty.batching.ghost_bn import GhostBatchNorm, Regime, convert_ghost_bn, regime_adaptation

SHAPES = {1: (24, 5), 2: (24, 5, 3, 4)}  # (N, C) for BatchNorm1d, (N, C, H, W) for BatchNorm2d
BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}


def _pair(dims: int, ghost_size: int, momentum: float | None = 0.1) -> tuple[nn.Module, GhostBatchNorm]:
    torch.manual_seed(0)
    bn = BN[dims](5, momentum=momentum)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    ghost = GhostBatchNorm(5, ghost_size, momentum=momentum)
    ghost.load_state_dict(bn.state_dict())
    return bn, ghost


@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize("ghost_size", [24, 100])
def test_ghost_size_covering_the_batch_is_batchnorm(dims, ghost_size):
    bn, ghost = _pair(dims, ghost_size)
    x = torch.randn(SHAPES[dims]) * 3 + 1
    w = torch.randn(SHAPES[dims])
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    for _ in range(2):
        ya, yb = bn(xa), ghost(xb)
        assert torch.equal(ya, yb)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    assert torch.equal(xa.grad, xb.grad)
    assert torch.equal(bn.weight.grad, ghost.weight.grad) and torch.equal(bn.bias.grad, ghost.bias.grad)
    for name, buffer in bn.named_buffers():
        assert torch.equal(buffer, ghost.get_buffer(name)), name
    bn.eval(), ghost.eval()
    assert torch.equal(bn(x), ghost(x))


def test_ghost_size_one_is_an_error():
    with pytest.raises(ValueError, match="ghost_size must be at least 2"):
        GhostBatchNorm(4, 1)


@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_output_and_running_stats_equal_per_chunk_batchnorm(dims, momentum):
    bn, ghost = _pair(dims, 6, momentum)
    x = torch.randn(SHAPES[dims]) * 2 - 1
    out = ghost(x)
    reduce = [0, *range(2, x.dim())]
    shape = (1, -1) + (1,) * (x.dim() - 2)
    mean, var = bn.running_mean.clone(), bn.running_var.clone()
    for k, chunk in enumerate(x.split(6)):
        mu, v = chunk.mean(reduce), chunk.var(reduce, correction=0)
        normalized = (chunk - mu.view(shape)) / torch.sqrt(v.view(shape) + bn.eps)
        manual = normalized * bn.weight.view(shape) + bn.bias.view(shape)
        torch.testing.assert_close(out[6 * k : 6 * (k + 1)], manual, rtol=1e-5, atol=1e-5)
        n = chunk.numel() / chunk.shape[1]
        m = 1.0 / (k + 1) if momentum is None else momentum
        mean = (1 - m) * mean + m * mu
        var = (1 - m) * var + m * v * n / (n - 1)
        bn(chunk)  # nn.BatchNorm on each chunk in turn
    torch.testing.assert_close(ghost.running_mean, mean)
    torch.testing.assert_close(ghost.running_var, var)
    assert torch.equal(ghost.running_mean, bn.running_mean) and torch.equal(ghost.running_var, bn.running_var)
    assert int(ghost.num_batches_tracked) == 4 == int(bn.num_batches_tracked)


def test_uneven_batch_splits_into_nearly_equal_chunks_of_at_least_ghost_size():
    ghost = GhostBatchNorm(3, 4)
    x = torch.randn(11, 3)
    out = ghost(x)  # 11 // 4 = 2 chunks: 6 and 5 samples
    bn = nn.BatchNorm1d(3)
    torch.testing.assert_close(out, torch.cat([bn(x[:6]), bn(x[6:])]))
    assert int(ghost.num_batches_tracked) == 2


def test_eval_uses_running_stats_over_the_whole_batch_and_no_running_stats_uses_chunks():
    ghost = GhostBatchNorm(3, 4)
    ghost(torch.randn(16, 3))
    ghost.eval()
    x = torch.randn(16, 3)
    expected = F.batch_norm(x, ghost.running_mean, ghost.running_var, ghost.weight, ghost.bias, False, 0.0, ghost.eps)
    torch.testing.assert_close(ghost(x), expected)
    stateless = GhostBatchNorm(3, 4, track_running_stats=False).eval()
    torch.testing.assert_close(
        stateless(x), torch.cat([F.batch_norm(c, None, None, training=True) for c in x.split(4)])
    )


def test_one_pass_equals_the_official_gradient_accumulation_over_chunks():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    ghost_net = convert_ghost_bn(copy.deepcopy(net), 4)
    x, y = torch.randn(16, 6), torch.randint(3, (16,))
    F.cross_entropy(ghost_net(x), y).backward()
    chunks = list(zip(x.chunk(4), y.chunk(4), strict=True))  # main_gbn.py: chunk, backward each, divide
    for cx, cy in chunks:
        F.cross_entropy(net(cx), cy).backward()
    for p, q in zip(net.parameters(), ghost_net.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad / len(chunks))
    for a, b in zip(net.buffers(), ghost_net.buffers(), strict=True):
        torch.testing.assert_close(a, b)


def test_convert_ghost_bn_swaps_every_batchnorm_and_keeps_state():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.Flatten(), nn.BatchNorm1d(16)))
    net(torch.randn(8, 1, 4, 4))
    net.eval()
    expected = net(x := torch.randn(8, 1, 4, 4))
    converted = convert_ghost_bn(net, 2)
    assert converted is net
    kinds = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(kinds) == 2 and all(isinstance(m, GhostBatchNorm) and m.ghost_size == 2 for m in kinds)
    assert not net.training and torch.equal(net(x), expected)
    assert isinstance(convert_ghost_bn(nn.BatchNorm1d(3), 4), GhostBatchNorm)


def test_regime_adaptation_scales_lr_by_sqrt_and_the_regime_by_the_ceiling():
    assert regime_adaptation(0.1, 10, [5, 8], 1024, 128) == Regime(0.1 * math.sqrt(8), 80, (40, 64))
    regime = regime_adaptation(0.1, 10, (5,), 1000, 128)  # ratio 7.8: sqrt of the ratio, ceiling 8
    assert regime.lr == pytest.approx(0.1 * math.sqrt(1000 / 128)) and regime.epochs == 80
    assert regime_adaptation(0.1, 3, (), 64, 64) == Regime(0.1, 3, ())
    with pytest.raises(ValueError, match="batch sizes must be positive"):
        regime_adaptation(0.1, 3, (), 0, 64)
    with pytest.raises(ValueError, match="epochs >= 1"):
        regime_adaptation(0.1, 0, (), 128, 64)
