"""Linear decay and warm-up + cosine as multipliers and as LambdaLR schedulers."""

from __future__ import annotations

import math

import pytest
import torch

from thrifty.schedules import linear_decay, linear_decay_factor, warmup_cosine, warmup_cosine_factor


def _lrs(make, steps: int, **kwargs) -> list[float]:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.0)
    sched = make(opt, steps, **kwargs)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_linear_decay_is_one_minus_t_over_T():
    assert _lrs(linear_decay, 4) == pytest.approx([2.0, 1.5, 1.0, 0.5])


def test_linear_decay_with_warmup():
    f = linear_decay_factor(10, warmup_steps=2)
    assert [f(s) for s in range(4)] == pytest.approx([0.5, 1.0, 1.0, 0.875])
    assert f(10) == 0.0 and f(12) == 0.0


def test_warmup_cosine_shape():
    f = warmup_cosine_factor(12, warmup_steps=2)
    assert f(0) == pytest.approx(0.5) and f(1) == pytest.approx(1.0)
    assert f(7) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(12) == pytest.approx(0.0)
    assert _lrs(warmup_cosine, 3)[0] == pytest.approx(2.0)


@pytest.mark.parametrize("factory", [linear_decay_factor, warmup_cosine_factor])
@pytest.mark.parametrize("total, warmup", [(0, 0), (-5, 0), (10, -1), (10, 11)])
def test_bad_step_counts_are_rejected(factory, total, warmup):
    with pytest.raises(ValueError, match="steps must be"):
        factory(total, warmup)
