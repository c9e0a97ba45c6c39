import pytest
import torch

from thrifty.distributed.aggregators import (
    AGGREGATORS,
    coordinate_median,
    mean,
    nna,
    nna_many,
    nna_select,
    trimmed_mean,
)


def test_nna_hand_computation():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [10.0, 10.0], [-2.0, 0.0]])
    # distances to row 0: 0, 1, 3, 14.1, 2 -> the k - f = 3 closest are rows 0, 1, 4
    assert nna_select(x, 2, 0).tolist() == [0, 1, 4]
    torch.testing.assert_close(nna(x, 2, 0), torch.tensor([(0.0 + 1.0 - 2.0) / 3, 0.0]))
    # pivot row 2: distances 3, sqrt(10), 0, 12.2, sqrt(13) -> rows 2, 0, 1
    torch.testing.assert_close(nna(x, 2, 2), torch.tensor([1.0 / 3, 1.0]))


def test_nna_ties_go_to_the_lower_index_as_byzfl():
    # ByzFL's documented example: MoNNA(f=1, idx=1) on these rows gives [2.5, 3.5, 4.5]
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    torch.testing.assert_close(nna(x, 1, 1), torch.tensor([2.5, 3.5, 4.5]))


def test_nna_with_f_zero_is_the_mean_and_keeps_the_pivot_among_copies():
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(nna(x, 0, 3), x.mean(0))
    copies = torch.zeros(3, 2)
    assert nna_select(copies, 2, 2).tolist() == [2]


def test_nna_is_permutation_invariant_and_stays_in_the_hull_of_the_chosen():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 4, generator=g)
    perm = torch.randperm(7, generator=g)
    pivot = 2
    new_pivot = int((perm == pivot).nonzero())
    torch.testing.assert_close(nna(x[perm], 2, new_pivot), nna(x, 2, pivot))
    chosen = x[nna_select(x, 2, pivot)]
    out = nna(x, 2, pivot)
    assert torch.all(out >= chosen.min(0).values - 1e-6) and torch.all(out <= chosen.max(0).values + 1e-6)


def test_nna_many_equals_nna_for_each_pivot():
    x = torch.randn(9, 7, generator=torch.Generator().manual_seed(2))
    x[4] = x[1]  # an exact tie
    expected = torch.stack([nna(x, 3, i) for i in (0, 1, 4, 8)])
    torch.testing.assert_close(nna_many(x, 3, [0, 1, 4, 8]), expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="pivots must be row indices"):
        nna_many(x, 3, [9])


def test_nna_drops_far_outliers_and_nan_vectors():
    honest = torch.ones(5, 3)
    x = torch.cat([honest, torch.full((1, 3), 1e6), torch.full((1, 3), float("nan"))])
    assert torch.equal(nna(x, 2, 0), torch.ones(3))


def test_mean_median_trimmed_mean_hand_computations():
    x = torch.tensor([[1.0, 10.0], [2.0, -5.0], [100.0, 0.0], [3.0, 1.0]])
    torch.testing.assert_close(mean(x), torch.tensor([26.5, 1.5]))
    torch.testing.assert_close(coordinate_median(x), torch.tensor([2.5, 0.5]))
    torch.testing.assert_close(coordinate_median(x[:3]), torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(trimmed_mean(x, 1), torch.tensor([2.5, 0.5]))
    torch.testing.assert_close(trimmed_mean(x, 0), mean(x))


def test_registry_uses_one_signature():
    x = torch.tensor([[0.0], [1.0], [5.0]])
    assert {name: float(rule(x, 1, 0)) for name, rule in AGGREGATORS.items()} == {
        "nna": 0.5,
        "mean": 2.0,
        "median": 1.0,
        "trimmed_mean": 1.0,
    }


def test_bad_input():
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="f must be an integer in"):
        nna(x, 3, 0)
    with pytest.raises(ValueError, match="pivot"):
        nna(x, 1, 3)
    with pytest.raises(ValueError, match="2-D tensor"):
        nna(torch.zeros(3), 1, 0)
    with pytest.raises(ValueError, match="floating point"):
        mean(torch.zeros(3, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="more than 2f"):
        trimmed_mean(torch.zeros(4, 2), 2)
