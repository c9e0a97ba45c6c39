import pytest
import torch

from thrifty.diffusion.core import teachers
from thrifty.diffusion.core.data import GaussianMixture
from thrifty.diffusion.core.denoiser import ModuleDenoiser
from thrifty.diffusion.core.schedules import RectifiedFlowSchedule, VPSchedule
from thrifty.diffusion.core.teachers import TimeMLP, train_diffusion, train_flow_matching


def test_flow_matching_learns_the_exact_velocity_of_a_gaussian():
    torch.manual_seed(0)
    mix = GaussianMixture(torch.tensor([[1.0, -1.0]]), 0.5)
    net = TimeMLP(2, 64, 2, time_dim=16)
    exact = mix.denoiser(RectifiedFlowSchedule())
    learned = ModuleDenoiser(net, "velocity")
    x, t = torch.randn(256, 2), torch.rand(256) * 0.9 + 0.05

    def error() -> float:
        with torch.no_grad():
            return float((learned(x, t) - exact.predict(x, t).velocity).pow(2).mean())

    before = error()
    losses = train_flow_matching(net, lambda n, g: mix.sample(n, g), steps=300, batch_size=256, lr=3e-3)
    assert len(losses) == 300 and error() < 0.2 * before


def test_train_diffusion_targets_the_declared_prediction():
    torch.manual_seed(0)
    data = torch.randn(512, 2) * 0.3 + 1.0
    net = TimeMLP(2, 32, 2, time_dim=16)
    sch = VPSchedule("cosine")
    losses = train_diffusion(net, data, sch, steps=200, prediction_type="x0", batch_size=128, lr=3e-3)
    # an x0-predictor of a tight cluster at (1, 1): the prediction from pure noise is near the data mean
    with torch.no_grad():
        pred = net(torch.randn(64, 2), sch.timestep(torch.ones(64)))
    assert sum(losses[-20:]) < 0.5 * sum(losses[:20])
    assert torch.allclose(pred.mean(0), torch.ones(2), atol=0.2)


def test_teacher_is_trained_once_then_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("THRIFTY_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(
        teachers, "TOY2D_TEACHER", {"hidden": 16, "depth": 2, "steps": 20, "batch_size": 32, "lr": 1e-3}
    )
    first = teachers.toy2d_teacher("two_moons")
    files = list((tmp_path / "diffusion").glob("rf_two_moons_*.pt"))
    assert len(files) == 1 and first.prediction_type == "velocity"

    def no_training(*args, **kwargs):
        raise AssertionError("the cached teacher was retrained")

    monkeypatch.setattr(teachers, "train_flow_matching", no_training)
    second = teachers.toy2d_teacher("two_moons")
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="unknown 2-D toy"):
        teachers.toy2d_teacher("spiral")
