import pytest
import torch

from thrifty.distributed import spawn
from thrifty.nn.global_lbl import (
    GlobalLoadBalancingLoss,
    MoELayer,
    expert_counts,
    micro_batch_load_balancing_loss,
)

E, K = 6, 2


def _routing(seed: int, tokens: int, skew: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(tokens, E, generator=g, dtype=torch.float64)
    logits[:, 0] += skew
    probs = logits.softmax(-1)
    return probs, probs.topk(K, dim=-1).indices


def _by_hand(probs, selected):
    t = probs.shape[0]
    f = torch.tensor([(selected == i).sum().item() for i in range(E)], dtype=torch.float64) / (K * t)
    return E * sum(f[i] * probs[:, i].sum() / t for i in range(E))


def test_micro_batch_loss_matches_the_formula_and_is_one_for_uniform_routing():
    probs, selected = _routing(0, 30, skew=1.5)
    assert torch.allclose(micro_batch_load_balancing_loss(probs, selected, K), _by_hand(probs, selected))
    uniform = torch.full((E, E), 1.0 / E, dtype=torch.float64)
    cyclic = torch.stack([torch.arange(E), (torch.arange(E) + 1) % E], dim=1)
    assert micro_batch_load_balancing_loss(uniform, cyclic, K).item() == pytest.approx(1.0, abs=1e-15)


def test_one_rank_one_micro_batch_equals_the_micro_batch_loss():
    probs, selected = _routing(1, 40, skew=1.0)
    lbl = GlobalLoadBalancingLoss(E, K)
    lbl.update(selected)
    lbl.synchronize()
    assert torch.equal(lbl(probs), micro_batch_load_balancing_loss(probs, selected, K))


def test_several_micro_batches_give_the_loss_of_the_concatenated_batch():
    micro = [_routing(s, 16, skew=float(s)) for s in range(4)]  # skewed differently: per-batch f differ
    lbl = GlobalLoadBalancingLoss(E, K)
    for _, selected in micro:
        lbl.update(selected)
    f = lbl.synchronize()
    assert int(lbl.global_counts.sum()) == K * 16 * 4
    terms = torch.stack([lbl(probs) for probs, _ in micro])
    concatenated = micro_batch_load_balancing_loss(
        torch.cat([p for p, _ in micro]), torch.cat([s for _, s in micro]), K
    )
    assert torch.allclose(terms.mean(), concatenated, rtol=1e-14, atol=0)
    per_micro = torch.stack([micro_batch_load_balancing_loss(p, s, K) for p, s in micro])
    assert not torch.allclose(per_micro.mean(), concatenated)  # the two definitions differ on this data
    assert torch.allclose(f.sum(), torch.tensor(1.0, dtype=torch.float64))


def test_frequencies_carry_no_gradient():
    probs, selected = _routing(2, 10)
    logits = probs.log().requires_grad_()
    lbl = GlobalLoadBalancingLoss(E, K)
    lbl.update(selected)
    f = lbl.synchronize()
    p = logits.softmax(-1)
    lbl(p).backward()
    # d LBL / d p_{t,i} = N_E f_i / T: chain through the softmax by hand
    grad_p = (E * f / 10).expand(10, E)
    expected = p * (grad_p - (grad_p * p).sum(-1, keepdim=True))
    assert torch.allclose(logits.grad, expected.detach(), atol=1e-15)


def _rank_loss(rank: int, world: int) -> tuple[float, list[float], int]:
    micro = [_routing(10 * rank + s, 12, skew=2.0 * rank) for s in range(2)]
    lbl = GlobalLoadBalancingLoss(E, K)
    for _, selected in micro:
        lbl.update(selected)
    lbl.synchronize()
    return (
        torch.stack([lbl(p) for p, _ in micro]).mean().item(),
        lbl.frequencies().tolist(),
        int(lbl.global_counts.sum()),
    )


@pytest.mark.slow
def test_two_ranks_equal_one_process_on_the_concatenated_global_batch():
    results = spawn(_rank_loss, 2)
    everything = [_routing(10 * r + s, 12, skew=2.0 * r) for r in range(2) for s in range(2)]
    probs, selected = torch.cat([p for p, _ in everything]), torch.cat([s for _, s in everything])
    expected = micro_batch_load_balancing_loss(probs, selected, K).item()
    # data-parallel training averages the ranks' losses (gradients): the mean is the global-batch loss
    assert sum(r[0] for r in results) / 2 == pytest.approx(expected, rel=1e-14)
    assert results[0][1] == results[1][1]
    assert results[0][2] == K * 12 * 4
    assert results[0][1] == pytest.approx((expert_counts(selected, E).double() / (K * 48)).tolist(), rel=1e-15)


def test_moe_layer_matches_a_per_token_loop():
    torch.manual_seed(0)
    layer = MoELayer(8, 16, num_experts=4, top_k=2).double()
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    out, probs, selected = layer(x)
    assert out.shape == x.shape and probs.shape == (3, 5, 4) and selected.shape == (3, 5, 2)
    for b in range(3):
        for t in range(5):
            s = torch.softmax(layer.router(x[b, t]), -1)
            top = s.topk(2)
            gates = top.values / top.values.sum()
            y = sum(g * layer.experts[int(i)](x[b, t]) for g, i in zip(gates, top.indices, strict=True))
            assert torch.allclose(out[b, t], y, atol=1e-14)
    (out.square().sum() + micro_batch_load_balancing_loss(probs, selected, 2)).backward()
    assert layer.router.weight.grad.abs().sum() > 0


def test_bad_input():
    lbl = GlobalLoadBalancingLoss(E, K)
    with pytest.raises(RuntimeError, match="synchronize"):
        lbl(torch.full((3, E), 1.0 / E))
    with pytest.raises(RuntimeError, match="update"):
        lbl.synchronize()
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        lbl.update(torch.tensor([[0, 6]]))
    with pytest.raises(ValueError, match="top_k"):
        lbl.update(torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match="num_experts"):
        GlobalLoadBalancingLoss(4, 5)
    with pytest.raises(ValueError, match="top_k"):
        MoELayer(4, 4, num_experts=2, top_k=3)
    lbl.update(torch.tensor([[0, 1]]))
    lbl.synchronize()
    with pytest.raises(ValueError, match="last dimension"):
        lbl(torch.ones(2, E + 1))
    lbl.reset()
    assert not lbl.synchronized and int(lbl.counts.sum()) == 0
