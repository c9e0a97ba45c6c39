"""Consistency distillers (Hyper-SD's TSCD, SCott) and improved LCT: targets, boundaries, losses, one training step."""

import math

import pytest
import torch

from thrifty.diffusion.core.data import eight_gaussians
from thrifty.diffusion.core.denoiser import ModuleDenoiser
from thrifty.diffusion.core.schedules import RectifiedFlowSchedule, VPSchedule
from thrifty.diffusion.core.solvers import Euler, Stochastic, sample
from thrifty.diffusion.core.teachers import TimeMLP
from thrifty.diffusion.distill._core import ConsistencyDistillation, TCDStep, consistency_sample
from thrifty.diffusion.distill._losses import cauchy_loss, pseudo_huber_loss
from thrifty.diffusion.distill.hyper_sd import HyperSD
from thrifty.diffusion.distill.improved_lct import (
    ImprovedLCT,
    NonScalingLayerNorm,
    karras_levels,
    lognormal_level_probs,
)
from thrifty.diffusion.distill.scott import SCott


def _student(seed=0, schedule=None):
    torch.manual_seed(seed)
    return ModuleDenoiser(TimeMLP(2, 32, 2, time_dim=16), "velocity", schedule or RectifiedFlowSchedule())


def _x0(n=64, seed=0):
    return eight_gaussians().sample(n, torch.Generator().manual_seed(seed))


@torch.no_grad()
@pytest.mark.parametrize("schedule", [RectifiedFlowSchedule(), VPSchedule()])
def test_segment_map_to_its_own_time_is_the_identity(schedule):
    # f(x, t -> s) is the DDIM jump of the prediction; at s = t it returns x: the boundary condition by construction
    student = _student(schedule=schedule)
    x = torch.randn(16, 2)
    t = torch.linspace(0.1, 0.9, 16)
    assert torch.allclose(Euler().step(student, x, t, t), x, atol=1e-4)


@torch.no_grad()
def test_segment_targets_at_and_inside_boundaries():
    teacher = eight_gaussians().denoiser()
    cd = ConsistencyDistillation(teacher, _student(), segments=4, num_timesteps=8, target=_student(1))
    x0, eps = _x0(4), torch.randn(4, 2, generator=torch.Generator().manual_seed(1))
    n = torch.tensor([3, 4, 1, 8])  # t = 3/8 (t' = 1/4 is its segment start), 1/2, 1/8 (t' = 0), 1
    x_t, t, s, target = cd.targets(x0, eps, n)
    assert s.tolist() == [0.25, 0.25, 0.0, 0.75]
    assert torch.allclose(x_t, (1 - t[:, None]) * x0 + t[:, None] * eps)
    for i in range(4):
        t_prev = (int(n[i]) - 1) / 8
        x_prev = Euler().step(teacher, x_t[i : i + 1], t[i], torch.tensor(t_prev))  # the teacher's DDIM step
        if abs(t_prev - float(s[i])) < 1e-9:  # boundary condition: the target is the teacher's point itself
            expected = x_prev
        else:
            pred = cd.target.predict(x_prev, torch.tensor([t_prev]))
            expected = (1 - s[i]) * pred.x0 + s[i] * pred.eps
        assert torch.allclose(target[i : i + 1], expected, atol=1e-5), i


def test_consistency_loss_is_distance_of_student_segment_map_to_target():
    teacher = eight_gaussians().denoiser()
    cd = ConsistencyDistillation(teacher, _student(), segments=2, num_timesteps=8, generator=torch.Generator())
    x0 = _x0(32)
    cd.generator.manual_seed(7)
    loss = cd.loss(x0, 0)
    g = torch.Generator().manual_seed(7)
    eps = torch.randn(x0.shape, generator=g)
    n = torch.randint(1, 9, (32,), generator=g)
    x_t, t, s, target = cd.targets(x0, eps, n)
    pred = cd.student.predict(x_t, t)
    expected = (((1 - s[:, None]) * pred.x0 + s[:, None] * pred.eps - target) ** 2).mean()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    with pytest.raises(ValueError, match="multiple"):
        ConsistencyDistillation(teacher, _student(), segments=3, num_timesteps=8)
    with pytest.raises(ValueError, match="one time per sample"):
        ConsistencyDistillation(teacher, _student(), teacher_solver="heun")


@torch.no_grad()
def test_scott_teacher_is_the_stochastic_solver_in_sub_steps():
    teacher = eight_gaussians().denoiser()
    x = torch.randn(6, 2)
    t, t_next = torch.full((6,), 0.5), torch.full((6,), 0.25)
    ode = SCott(teacher, _student(), eta=0.0, sub_steps=2, num_timesteps=4)
    grid = torch.tensor([0.5, 0.375, 0.25])
    assert torch.allclose(ode.teacher_move(x, t, t_next), sample(teacher, x, grid, "euler"), atol=1e-6)
    sde = SCott(teacher, _student(), eta=0.7, sub_steps=2, num_timesteps=4, generator=torch.Generator())
    sde.generator.manual_seed(3)
    moved = sde.teacher_move(x, t, t_next)
    expected = sample(teacher, x, grid, Stochastic(eta=0.7), generator=torch.Generator().manual_seed(3))
    assert torch.allclose(moved, expected, atol=1e-6)
    assert not torch.allclose(moved, ode.teacher_move(x, t, t_next), atol=1e-3)


@torch.no_grad()
def test_tcd_step_interpolates_between_ddim_and_consistency_sampling():
    student = _student()
    x, t, t_next = torch.randn(8, 2), torch.tensor(0.8), torch.tensor(0.4)
    assert torch.allclose(TCDStep(0.0).step(student, x, t, t_next), Euler().step(student, x, t, t_next))
    z = torch.randn(8, 2, generator=torch.Generator().manual_seed(2))
    x0 = student.predict(x, t).x0
    got = TCDStep(1.0).step(student, x, t, t_next, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(got, 0.6 * x0 + 0.4 * z, atol=1e-6)
    one = consistency_sample(student, x, steps=1)
    assert torch.allclose(one, student.predict(x, 1.0).x0, atol=1e-6)
    with pytest.raises(ValueError, match="steps == segments"):
        consistency_sample(student, x, steps=2, segments=4)


def test_hyper_sd_stages_share_the_budget_and_run_in_order():
    teacher = eight_gaussians().denoiser()
    hyper = HyperSD(teacher, _student(), stages=(8, 4, 2, 1), num_timesteps=16, generator=torch.Generator())
    assert hyper.stage_steps(10) == [2, 2, 2, 4]
    seen = []
    log = hyper.fit([_x0(32)], 10, on_stage=lambda k, student: seen.append(k))
    assert seen == [8, 4, 2, 1] and [len(stage.losses) for stage in log.stages] == [2, 2, 2, 4]
    assert log.losses == [v for stage in log.stages for v in stage.losses] and len(log.seconds) == 10
    with pytest.raises(ValueError, match="divisor"):
        HyperSD(teacher, _student(), stages=(3,), num_timesteps=16)


def test_karras_levels_and_lognormal_probabilities():
    levels = karras_levels(5)
    lo, hi = 0.002 ** (1 / 7), 80 ** (1 / 7)
    assert levels.tolist() == pytest.approx([(lo + i / 4 * (hi - lo)) ** 7 for i in range(5)])
    probs = lognormal_level_probs(levels)

    def cdf(s):
        return math.erf((math.log(s) + 1.1) / (math.sqrt(2) * 2.0))

    raw = [cdf(levels[i + 1]) - cdf(levels[i]) for i in range(4)]
    assert probs.tolist() == pytest.approx([r / sum(raw) for r in raw])


@torch.no_grad()
def test_improved_lct_loss_matches_the_hand_computation():
    student = _student()
    x0 = _x0(16)
    for loss_name, fn in (("cauchy", cauchy_loss), ("pseudo_huber", pseudo_huber_loss)):
        lct = ImprovedLCT(
            student,
            total_steps=100,
            loss=loss_name,
            c=0.3,
            diffusion_weight=2.0,
            diffusion_t_max=0.2,
            ot=False,
            generator=torch.Generator().manual_seed(4),
        )
        got = lct.loss(x0, 0)
        g = torch.Generator().manual_seed(4)
        levels = karras_levels(11)  # N(0) = s0 + 1
        i = torch.multinomial(lognormal_level_probs(levels), 16, replacement=True, generator=g)
        z = torch.randn(x0.shape, generator=g)
        s_lo, s_hi = levels[i].float(), levels[i + 1].float()
        t_lo, t_hi = s_lo / (1 + s_lo), s_hi / (1 + s_hi)  # rectified flow: sigma / alpha = t / (1 - t)
        assert torch.allclose(lct.times(levels[i]), t_lo, atol=1e-5)
        pred = student.predict((1 - t_hi[:, None]) * x0 + t_hi[:, None] * z, t_hi).x0
        target = student.predict((1 - t_lo[:, None]) * x0 + t_lo[:, None] * z, t_lo).x0
        weight = (1 / (levels[i + 1] - levels[i])).float()
        early = (t_hi <= 0.2).float()
        expected = fn(pred, target, 0.3, weight) + 2.0 * (early * ((pred - x0) ** 2).mean(1)).mean()
        assert float(got) == pytest.approx(float(expected), rel=1e-4), loss_name


def test_non_scaling_layer_norm_has_no_scale():
    norm = NonScalingLayerNorm(4)
    with torch.no_grad():
        norm.bias.copy_(torch.tensor([0.0, 1.0, 2.0, 3.0]))
    x = torch.randn(3, 4)
    expected = (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, unbiased=False, keepdim=True) + 1e-5) + norm.bias
    assert torch.allclose(norm(x), expected, atol=1e-5)
    assert [name for name, _ in norm.named_parameters()] == ["bias"]


def test_each_consistency_distiller_step_reduces_its_loss():
    teacher = eight_gaussians().denoiser()
    x0 = _x0(128)
    cases = [
        ConsistencyDistillation(teacher, _student(), segments=2, num_timesteps=8, lr=3e-3, generator=torch.Generator()),
        SCott(teacher, _student(), eta=0.5, sub_steps=2, num_timesteps=8, lr=3e-3, generator=torch.Generator()),
        ImprovedLCT(_student(), total_steps=100, c=0.1, lr=3e-3, generator=torch.Generator()),
    ]
    for distiller in cases:
        before, after = [], []
        distiller.generator.manual_seed(0)
        with torch.no_grad():
            before = float(distiller.loss(x0, 0))
        for _ in range(8):
            distiller.generator.manual_seed(0)
            distiller.train_step(x0)
        distiller.generator.manual_seed(0)
        with torch.no_grad():
            after = float(distiller.loss(x0, 0))
        assert after < before, type(distiller).__name__
