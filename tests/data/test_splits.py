import numpy as np
import pytest
import torch

from thrifty.data.splits import dirichlet_split, sorted_split


def test_dirichlet_split_follows_the_official_recipe():
    labels = torch.arange(10).repeat_interleave(30)  # 10 classes of 30
    parts = dirichlet_split(labels, 4, alpha=1.0, seed=7)
    rng = np.random.default_rng(7)
    counts = (75 * rng.dirichlet(np.ones(10), size=4)).astype(np.int64)  # len // parts = 75 per peer
    for part, row in zip(parts, counts, strict=True):
        assert len(set(part.tolist())) == len(part)  # no index twice within a peer
        got = np.bincount(labels[part].numpy(), minlength=10)
        np.testing.assert_array_equal(got, np.minimum(row, 30))
    assert [p.tolist() for p in dirichlet_split(labels, 4, alpha=1.0, seed=7)] == [p.tolist() for p in parts]


def test_small_alpha_concentrates_classes_and_large_alpha_spreads_them():
    labels = torch.arange(10).repeat_interleave(100)

    def classes_per_peer(alpha: float) -> float:
        parts = dirichlet_split(labels, 8, alpha=alpha, seed=0)
        return float(np.mean([len(torch.unique(labels[p])) for p in parts]))

    assert classes_per_peer(0.05) < 4 < 9.5 <= classes_per_peer(100.0)


def test_sorted_split_is_a_disjoint_cover_of_label_sorted_blocks():
    labels = torch.tensor([2, 0, 1, 0, 2, 1, 1])
    parts = sorted_split(labels, 3)
    assert [p.tolist() for p in parts] == [[1, 3, 2], [5, 6], [0, 4]]
    assert sorted(torch.cat(parts).tolist()) == list(range(7))


def test_bad_input():
    with pytest.raises(ValueError, match="num_parts"):
        sorted_split(torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="alpha must be positive"):
        dirichlet_split(torch.tensor([0, 1]), 2, alpha=0.0)
    with pytest.raises(ValueError, match="integer tensor"):
        dirichlet_split(torch.tensor([0.0, 1.0]), 2, alpha=1.0)
