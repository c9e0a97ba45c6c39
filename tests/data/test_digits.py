from __future__ import annotations

import torch

from thrifty.data.digits import load_digits_split


def test_split_sizes_dtypes_and_range():
    x_train, y_train, x_val, y_val = load_digits_split()
    assert x_train.shape == (1437, 64) and x_val.shape == (360, 64)
    assert y_train.shape == (1437,) and y_val.shape == (360,)
    assert x_train.dtype == x_val.dtype == torch.float32
    assert y_train.dtype == y_val.dtype == torch.int64
    assert 0.0 <= float(x_train.min()) and float(x_train.max()) == 1.0


def test_split_is_stratified():
    _, y_train, _, y_val = load_digits_split()
    train_counts = torch.bincount(y_train, minlength=10)
    val_counts = torch.bincount(y_val, minlength=10)
    assert int(train_counts.min()) >= 139 and int(val_counts.min()) >= 35
    assert int(val_counts.max() - val_counts.min()) <= 2


def test_split_is_fixed_and_returns_copies():
    first = load_digits_split()
    first[0].fill_(-1.0)
    second = load_digits_split()
    assert float(second[0].min()) >= 0.0
    assert all(torch.equal(a, b) for a, b in zip(second, load_digits_split(), strict=True))
