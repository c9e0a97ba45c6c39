"""Batch-size scaling rules (arXiv 2006.09092)."""

from __future__ import annotations

import pytest

from thrifty.schedules import scale_lr


def test_linear_and_sqrt_rules():
    assert scale_lr(0.1, 512, 128) == pytest.approx(0.4)
    assert scale_lr(0.1, 512, 128, rule="sqrt") == pytest.approx(0.2)
    assert scale_lr(0.1, 32, 128, rule="sqrt") == pytest.approx(0.05)
    assert scale_lr(1e-3, 64, 64) == 1e-3


@pytest.mark.parametrize(
    "args, match",
    [
        ((0.1, 64, 32, "cubic"), "rule must be one of linear, sqrt"),
        ((-0.1, 64, 32), "lr must be"),
        ((float("nan"), 64, 32), "lr must be"),
        ((0.1, 0, 32), "batch_size"),
        ((0.1, 64, -32), "base_batch_size"),
        ((0.1, 6.5, 32), "batch_size"),
    ],
)
def test_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        scale_lr(*args)
