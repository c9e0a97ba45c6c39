"""Schedules by name: one warm-up convention for thrifty train and the claims, and the refinement rule per optimizer."""

import pytest
import torch

from thrifty.optim import create_optimizer
from thrifty.schedules import SCHEDULES, make_scheduler, refine_rule, warmup_steps


def _lrs(schedule, steps=20, warmup=None):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = make_scheduler(opt, schedule, steps, warmup)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    return out


def test_warmup_names_warm_up_over_five_percent_and_the_others_start_at_the_peak():
    assert [warmup_steps(s, 40) for s in SCHEDULES] == [0, 0, 0, 2, 2]
    assert warmup_steps("warmup_linear", 10) == 1  # at least one step
    assert warmup_steps("cosine", 40, 4) == warmup_steps("warmup_cosine", 40, 4) == 4  # an explicit length wins
    with pytest.raises(ValueError, match="warmup must be in"):
        warmup_steps("linear", 10, 11)
    with pytest.raises(ValueError, match="schedule must be one of"):
        warmup_steps("step", 10)


def test_one_warmup_ramp_for_every_decay():
    ramp = pytest.approx([0.25, 0.5, 0.75, 1.0])
    for schedule in ("constant", "linear", "cosine"):
        assert _lrs(schedule, warmup=4)[:4] == ramp
    assert _lrs("constant", warmup=4)[4:] == [1.0] * 16
    assert _lrs("warmup_cosine", steps=40)[:3] == pytest.approx([0.5, 1.0, 1.0])
    assert _lrs("cosine")[0] == 1.0 and _lrs("cosine")[-1] < 0.01
    assert make_scheduler(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), "constant", 5) is None


def test_multipliers_hold_their_own_warmup():
    assert _lrs((1.0, 0.0), steps=3) == pytest.approx([1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="holds its own warm-up"):
        _lrs((1.0, 0.0), steps=3, warmup=1)


@pytest.mark.parametrize(
    "name, rule",
    [("adamw", "l1"), ("soap", "l1"), ("diffgrad", "l1"), ("adagrad", "l1"), ("sgd", "l2"), ("sgd_sai", "l2")],
)
def test_refine_rule_is_l1_for_coordinate_wise_adaptive_methods(name, rule):
    model = torch.nn.Linear(4, 2)
    assert refine_rule(create_optimizer(model, name, **({"lr": 0.1} if name == "sgd" else {}))) == rule
    assert refine_rule(torch.optim.Adagrad(model.parameters())) == "l1"
