"""MoNNA on real gloo processes: one 4-process run covers every scenario (process start is the expensive part)."""

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from thrifty.distributed import spawn
from thrifty.distributed.byzantine import ByzantinePeer, make_attack
from thrifty.distributed.monna import MoNNA, check_byzantine_bound

N, STEPS, LR, BETA = 4, 4, 0.3, 0.9


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(5, 3)


def _data(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + rank)
    return torch.randn(12, 5, generator=g), torch.randint(0, 3, (12,), generator=g)


def _flat(model: nn.Module) -> np.ndarray:
    return nn.utils.parameters_to_vector(model.parameters()).detach().numpy().copy()


def _honest_run(data_rank: int, f: int, aggregator: str, rushing: bool) -> np.ndarray:
    model = _model()
    opt = MoNNA(model.parameters(), lr=LR, f=f, momentum=BETA, aggregator=aggregator, rushing=rushing)
    x, y = _data(data_rank)
    for _ in range(STEPS):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return _flat(model)


def _byzantine_run(attack: str, f: int, aggregator: str, rushing: bool) -> list[np.ndarray]:
    initial = nn.utils.parameters_to_vector(_model().parameters()).detach()
    peer = ByzantinePeer(make_attack(attack), initial, f, [N - 1], aggregator=aggregator, rushing=rushing)
    return [peer.step().numpy().copy() for _ in range(STEPS)]


def _error(fn, *args) -> str:
    try:
        fn(*args)
    except ValueError as e:
        return str(e)
    return "no error"


def _scenarios(rank: int, world_size: int) -> dict:
    out = {"f0_heterogeneous": _honest_run(rank, 0, "nna", False)}
    byzantine = rank == N - 1
    for name, attack, aggregator, rushing in (
        ("nna_sign_flip", "sign_flip", "nna", True),
        ("mean_sign_flip", "sign_flip", "mean", True),
        ("nna_large_norm_stale", "large_norm", "nna", False),
    ):
        if byzantine:
            out[name] = _byzantine_run(attack, 1, aggregator, rushing)
        else:
            out[name] = _honest_run(0, 1, aggregator, rushing)
    model = _model()
    out["f_too_large"] = _error(MoNNA, model.parameters(), 0.1, 2)
    out["mismatch"] = _error(lambda: MoNNA(model.parameters(), 0.1, 1, aggregator="mean" if rank == 0 else "nna"))
    out["after_errors"] = _honest_run(0, 1, "nna", False)  # the group is still in step: nothing half-communicated
    return out


def _momentum_sgd_reference(datas, f_mix) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each peer: m = beta m + (1 - beta) g; x = theta - lr m; then theta = f_mix(all x). Returns thetas, last xs."""
    models = [_model() for _ in datas]
    bufs = [[torch.zeros_like(p) for p in m.parameters()] for m in models]
    xs = []
    for _ in range(STEPS):
        xs = []
        for model, buf, (x, y) in zip(models, bufs, datas, strict=True):
            model.zero_grad()
            F.cross_entropy(model(x), y).backward()
            with torch.no_grad():
                for p, b in zip(model.parameters(), buf, strict=True):
                    b.mul_(BETA).add_(p.grad, alpha=1 - BETA)
                    p.sub_(LR * b)
            xs.append(nn.utils.parameters_to_vector(model.parameters()).detach().clone())
        mixed = f_mix(torch.stack(xs))
        for model in models:
            nn.utils.vector_to_parameters(mixed.clone(), model.parameters())
    return [_flat(m) for m in models], [x.numpy() for x in xs]


@pytest.fixture(scope="module")
def results() -> list[dict]:
    return spawn(_scenarios, N, timeout_s=240)


@pytest.mark.slow
def test_f0_equals_momentum_sgd_with_model_averaging_on_heterogeneous_data(results):
    expected, _ = _momentum_sgd_reference([_data(r) for r in range(N)], lambda xs: xs.mean(0))
    for rank in range(N):
        np.testing.assert_allclose(results[rank]["f0_heterogeneous"], expected[rank], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_a_sign_flipping_peer_leaves_the_honest_peers_identical_to_attack_free_momentum_sgd(results):
    expected, last_half_steps = _momentum_sgd_reference([_data(0)], lambda xs: xs.mean(0))
    honest = [results[r]["nna_sign_flip"] for r in range(N - 1)]
    assert all(np.array_equal(h, honest[0]) for h in honest)
    np.testing.assert_allclose(honest[0], expected[0], rtol=0, atol=1e-6)
    sent = results[N - 1]["nna_sign_flip"]
    np.testing.assert_allclose(sent[-1], -last_half_steps[0], rtol=0, atol=1e-6)  # the current (rushing) honest model
    stale = [results[r]["nna_large_norm_stale"] for r in range(N - 1)]
    np.testing.assert_allclose(stale[0], expected[0], rtol=0, atol=1e-6)
    assert np.linalg.norm(results[N - 1]["nna_large_norm_stale"][-1]) > 50 * np.linalg.norm(expected[0])


@pytest.mark.slow
def test_plain_averaging_is_dragged_by_the_sign_flipping_peer(results):
    # honest copies x, x, x and the Byzantine -x average to x / 2 at every step
    expected, _ = _momentum_sgd_reference([_data(0)], lambda xs: xs.mean(0) / 2)
    np.testing.assert_allclose(results[0]["mean_sign_flip"], expected[0], rtol=0, atol=1e-6)


@pytest.mark.slow
def test_bad_settings_raise_clear_errors_on_every_rank_without_desynchronising(results):
    for rank in range(N):
        assert "cannot tolerate f = 2" in results[rank]["f_too_large"]
        assert "settings differ across ranks: ranks [1, 2, 3] disagree with rank 0" in results[rank]["mismatch"]
        np.testing.assert_array_equal(results[rank]["after_errors"], results[0]["after_errors"])


def test_bound_and_missing_process_group():
    check_byzantine_bound(2, 5)
    with pytest.raises(ValueError, match="2f < n"):
        check_byzantine_bound(2, 4)
    with pytest.raises(ValueError, match="non-negative integer"):
        check_byzantine_bound(-1, 4)
    with pytest.raises(RuntimeError, match="not initialized"):
        MoNNA(_model().parameters(), lr=0.1, f=0)
    with pytest.raises(ValueError, match="aggregator must be one of"):
        MoNNA(_model().parameters(), lr=0.1, f=0, aggregator="krum")


def test_one_peer_is_dampened_momentum_sgd_with_coupled_weight_decay():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        model, reference = _model(), _model()
        frozen = nn.Parameter(torch.ones(2))  # no gradient: skips the local step, still mixed
        opt = MoNNA([*model.parameters(), frozen], lr=0.1, f=0, momentum=0.9, dampening=0.5, weight_decay=0.01)
        bufs = [torch.zeros_like(p) for p in reference.parameters()]
        x, y = _data(0)
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            reference.zero_grad()
            F.cross_entropy(reference(x), y).backward()
            with torch.no_grad():
                for p, b in zip(reference.parameters(), bufs, strict=True):
                    b.mul_(0.9).add_(p.grad + 0.01 * p, alpha=0.5)
                    p.sub_(0.1 * b)
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(p, q)
        assert torch.equal(frozen, torch.ones(2))
        assert set(opt.state_dict()["state"]) == {0, 1}  # momentum buffers for the two trained tensors only
    finally:
        dist.destroy_process_group()
