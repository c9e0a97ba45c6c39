import pytest
import torch
import torch.distributed as dist

from thrifty.distributed import spawn


def _sum_ranks(rank: int, world_size: int, scale: float) -> float:
    t = torch.tensor([float(rank) * scale])
    dist.all_reduce(t)
    return t.item()


def _fail_on_one(rank: int, world_size: int) -> None:
    if rank == 1:
        raise ValueError("boom on rank one")
    dist.barrier()


@pytest.mark.slow
def test_spawn_returns_each_rank_value_in_order():
    assert spawn(_sum_ranks, 3, 2.0) == [6.0, 6.0, 6.0]


@pytest.mark.slow
def test_a_failing_rank_raises_with_its_traceback_instead_of_hanging():
    with pytest.raises(RuntimeError, match="boom on rank one"):
        spawn(_fail_on_one, 2, timeout_s=60)


def test_bad_world_size():
    with pytest.raises(ValueError, match="world_size"):
        spawn(_sum_ranks, 0, 1.0)


def _rank_tensor(rank: int, world_size: int) -> torch.Tensor:
    return torch.full((3,), float(rank))


@pytest.mark.slow
def test_ranks_may_return_tensors():
    a, b = spawn(_rank_tensor, 2)
    assert torch.equal(a, torch.zeros(3)) and torch.equal(b, torch.ones(3))
