"""scikit-learn's bundled 8x8 digits: a real classification dataset that needs no download.

The train/validation split is fixed (stratified, ``random_state=0``) and independent of any
training seed, so validation numbers from different seeds and methods are comparable.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

__all__ = ["NUM_CLASSES", "NUM_FEATURES", "load_digits_split"]

NUM_FEATURES = 64
NUM_CLASSES = 10


@lru_cache(maxsize=1)
def _cached_split() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    return (
        torch.from_numpy((x_train / 16.0).astype(np.float32)),
        torch.from_numpy(y_train.astype(np.int64)),
        torch.from_numpy((x_val / 16.0).astype(np.float32)),
        torch.from_numpy(y_val.astype(np.int64)),
    )


def load_digits_split() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(x_train, y_train, x_val, y_val)``: 1,437 / 360 images as float32 rows of 64 pixels in [0, 1].

    Labels are int64 in ``0..9``. Reading is cached; the tensors returned are fresh copies, so
    callers may modify them.
    """
    x_train, y_train, x_val, y_val = _cached_split()
    return x_train.clone(), y_train.clone(), x_val.clone(), y_val.clone()
