"""InstaFlow and SlimFlow: reflow / distillation losses pinned to the RF formulas, reflow straightens a 2-D flow."""

import pytest
import torch

from thrifty.diffusion.core.data import eight_gaussians
from thrifty.diffusion.core.denoiser import ModuleDenoiser
from thrifty.diffusion.core.metrics import straightness
from thrifty.diffusion.core.schedules import RectifiedFlowSchedule, VPSchedule
from thrifty.diffusion.core.solvers import sample, uniform_grid
from thrifty.diffusion.core.teachers import TimeMLP, train_flow_matching
from thrifty.diffusion.distill._core import Distiller, generate_pairs, pair_batches
from thrifty.diffusion.distill.instaflow import (
    InstaFlow,
    OneStepDistillation,
    Reflow,
    one_step_loss,
    reflow_loss,
    rf_times,
)
from thrifty.diffusion.distill.slimflow import AnnealingReflow, FlowGuidedDistillation, flow_guided_target


def _flow(seed=0, hidden=32, depth=2):
    torch.manual_seed(seed)
    return ModuleDenoiser(TimeMLP(2, hidden, depth, time_dim=16), "velocity", RectifiedFlowSchedule())


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g), eight_gaussians().sample(n, g)


@torch.no_grad()
def test_reflow_loss_is_the_rectified_flow_loss():
    flow = _flow()
    z, x0 = _data()
    t = torch.rand(64, generator=torch.Generator().manual_seed(1))
    x_t = (1 - t[:, None]) * x0 + t[:, None] * z
    expected = ((flow.module(x_t, t) - (z - x0)) ** 2).mean()
    assert float(reflow_loss(flow, z, x0, t)) == pytest.approx(float(expected), rel=1e-5)


def test_rf_times_follow_the_official_range():
    t = rf_times(10_000, 1e-3, torch.Generator().manual_seed(0))
    u = torch.rand(10_000, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(t, 1 - (u * (1 - 1e-3) + 1e-3), atol=1e-6)  # t_theirs = U (1 - eps) + eps, t = 1 - t_theirs
    assert float(t.min()) > 0 and float(t.max()) <= 1 - 1e-3


@torch.no_grad()
def test_reflow_loss_follows_the_students_schedule():
    sch = VPSchedule()
    torch.manual_seed(0)
    student = ModuleDenoiser(TimeMLP(2, 16, 2, time_dim=8), "epsilon", sch)
    z, x0 = _data()
    t = torch.full((64,), 0.3)
    a, s = sch.alpha(t)[:, None], sch.sigma(t)[:, None]
    da, ds = sch.derivatives(t)
    pred = student.predict(a * x0 + s * z, t)
    expected = ((pred.velocity - (da[:, None] * x0 + ds[:, None] * z)) ** 2).mean()
    assert float(reflow_loss(student, z, x0, t)) == pytest.approx(float(expected), rel=1e-5)


@torch.no_grad()
def test_one_step_loss_and_flow_guided_target_match_formulas():
    student, guide = _flow(0), _flow(1)
    z, x0 = _data()
    one = z - student.module(z, torch.ones(64))
    assert float(one_step_loss(student, z, x0, lambda a, b: ((a - b) ** 2).sum())) == pytest.approx(
        float(((one - x0) ** 2).sum()), rel=1e-5
    )
    s = torch.linspace(0.2, 0.8, 64)
    x_s = (1 - s[:, None]) * one + s[:, None] * z  # the official x_t' = z + t' v_student in its reversed time
    expected = x_s - s[:, None] * guide.module(x_s, s)
    assert torch.allclose(flow_guided_target(student, guide, z, s), expected, atol=1e-5)


def test_generate_pairs_solves_the_teacher_ode():
    teacher = _flow()
    z, _ = _data()
    noise, x0 = generate_pairs(teacher, z, steps=4, solver="euler", batch_size=16)
    assert torch.equal(noise, z)
    assert torch.allclose(x0, sample(teacher, z, uniform_grid(4), "euler"), atol=1e-6)
    batch = next(pair_batches(noise, x0, 8, torch.Generator().manual_seed(0)))
    assert batch[0].shape == (8, 2) and any(torch.equal(batch[1][0], row) for row in x0)


def test_reflow_makes_trajectories_straighter():
    gm = eight_gaussians()
    torch.manual_seed(0)
    net = TimeMLP(2, 64, 2, time_dim=16)
    train_flow_matching(net, lambda n, g: gm.sample(n, g), 250, 256, 3e-3)
    one_rf = ModuleDenoiser(net, "velocity", RectifiedFlowSchedule())
    insta = InstaFlow(
        one_rf, sample_shape=(2,), ode_steps=8, ode_solver="euler", generator=torch.Generator().manual_seed(0)
    )
    two_rf = insta.reflow(2048, steps=150)
    z = torch.randn(512, 2, generator=torch.Generator().manual_seed(3))
    grid = uniform_grid(8)
    with torch.no_grad():
        s1 = straightness(sample(one_rf, z, grid, return_trajectory=True)[1], grid)
        s2 = straightness(sample(two_rf, z, grid, return_trajectory=True)[1], grid)
    assert s2 < 0.5 * s1


def _improves(distiller: Distiller, batch, steps=8, seed=0) -> tuple[float, float]:
    def measured():
        gen = getattr(distiller, "generator", None)
        if gen is not None:
            gen.manual_seed(seed)
        with torch.no_grad():
            return float(distiller.loss(batch, distiller.step_count))

    before = measured()
    for _ in range(steps):
        if getattr(distiller, "generator", None) is not None:
            distiller.generator.manual_seed(seed)
        distiller.train_step(batch)
    return before, measured()


def test_each_trajectory_distiller_step_reduces_its_loss():
    z, x0 = _data(128)
    cases = [
        Reflow(_flow(), lr=3e-3, generator=torch.Generator()),
        OneStepDistillation(_flow(), lr=3e-3),
        AnnealingReflow(_flow(), warmup=None, lr=3e-3, generator=torch.Generator()),
        FlowGuidedDistillation(_flow(1), _flow(), lr=3e-3, generator=torch.Generator()),
    ]
    for distiller in cases:
        before, after = _improves(distiller, (z, x0))
        assert after < before, type(distiller).__name__


@torch.no_grad()
def test_annealing_reflow_flips_the_pair_jointly():
    student = _flow()
    z, x0 = _data(32)
    d = AnnealingReflow(student, warmup=None, flip_dims=(-1,), generator=torch.Generator())
    for seed in range(6):
        d.generator.manual_seed(seed)
        got = d.loss((z, x0), 0)
        g = torch.Generator().manual_seed(seed)
        flip = float(torch.rand((), generator=g)) < 0.5
        t = (1 - 1e-3) * (1 - torch.rand(32, generator=g))  # t_theirs ~ U[eps, 1), t = 1 - t_theirs
        zz, xx = (z.flip(-1), x0.flip(-1)) if flip else (z, x0)
        assert float(got) == pytest.approx(float(reflow_loss(student, zz, xx, t)), rel=1e-5)


def test_annealing_reflow_beta_and_bad_input():
    d = AnnealingReflow(_flow(), warmup=10, generator=torch.Generator())
    assert d.beta(0) == 1.0 and d.beta(5) == pytest.approx(0.5) and d.beta(20) == 0.0
    assert AnnealingReflow(_flow(), warmup=None).beta(0) == 0.0
    with pytest.raises(ValueError, match="kind"):
        AnnealingReflow(_flow(), warmup=10, kind="step")
    with pytest.raises(ValueError, match="t_range"):
        FlowGuidedDistillation(_flow(1), _flow(), t_range=(0.8, 0.2))
    with pytest.raises(TypeError, match="Denoiser"):
        Reflow(TimeMLP(2, 8, 1))
