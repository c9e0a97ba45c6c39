import pytest
import torch
from torch import nn

from thrifty.diffusion.core.denoiser import (
    PREDICTION_TYPES,
    DiffusersDenoiser,
    GaussianDenoiser,
    GaussianMixtureDenoiser,
    ModuleDenoiser,
    convert,
    from_x0_eps,
    to_x0_eps,
)
from thrifty.diffusion.core.schedules import EDMSchedule, RectifiedFlowSchedule, VPSchedule
from thrifty.diffusion.core.solvers import sample, uniform_grid


@pytest.mark.parametrize("sch", [RectifiedFlowSchedule(), VPSchedule("scaled_linear", 0.00085, 0.012), EDMSchedule()])
def test_predictions_round_trip_and_match_hand_formulas(sch):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    t = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9])
    a, s = sch.alpha(t)[:, None], sch.sigma(t)[:, None]
    x = a * x0 + s * eps
    da, ds = sch.derivatives(t)
    expected = {"epsilon": eps, "x0": x0, "v": a * eps - s * x0, "velocity": da[:, None] * x0 + ds[:, None] * eps}
    for kind in PREDICTION_TYPES:
        pred = from_x0_eps(x0, eps, kind, t, sch)
        assert torch.allclose(pred, expected[kind], atol=1e-5)
        rx0, reps = to_x0_eps(pred, kind, x, t, sch)
        assert torch.allclose(rx0, x0, atol=1e-3) and torch.allclose(reps, eps, atol=1e-3)
        for target in PREDICTION_TYPES:
            assert torch.allclose(convert(pred, kind, target, x, t, sch), expected[target], atol=2e-3)


def test_rectified_flow_velocity_is_eps_minus_x0():
    rf = RectifiedFlowSchedule()
    x0, eps = torch.randn(4, 2), torch.randn(4, 2)
    assert torch.allclose(from_x0_eps(x0, eps, "velocity", 0.3, rf), eps - x0)
    with pytest.raises(ValueError, match="unknown prediction type"):
        from_x0_eps(x0, eps, "score", 0.3, rf)


def test_gaussian_mixture_denoiser_is_the_exact_posterior_mean():
    # one component: E[x0 | x_t] = mu + a s0^2 (x_t - a mu) / (a^2 s0^2 + s^2)
    mu, s0 = torch.tensor([[1.0, -2.0]]), 0.5
    den = GaussianMixtureDenoiser(mu, s0)
    x, t = torch.randn(6, 2), torch.tensor(0.4)
    a, s = 0.6, 0.4
    assert torch.allclose(den(x, t), mu + a * s0**2 * (x - a * mu) / (a * a * s0**2 + s * s), atol=1e-6)
    # Monte Carlo check of a two-component mixture at one point: E[x0 | x_t] by importance weights
    den2 = GaussianMixtureDenoiser(torch.tensor([[-1.0], [2.0]]), torch.tensor([0.3, 0.6]), torch.tensor([1.0, 3.0]))
    g = torch.Generator().manual_seed(0)
    comp = torch.multinomial(torch.tensor([0.25, 0.75]), 400_000, replacement=True, generator=g)
    x0 = torch.tensor([-1.0, 2.0])[comp] + torch.tensor([0.3, 0.6])[comp] * torch.randn(400_000, generator=g)
    xt = torch.tensor([[0.5]])
    w = torch.exp(-0.5 * ((xt[0, 0] - 0.5 * x0) / 0.5) ** 2)
    assert float(den2(xt, torch.tensor(0.5))) == pytest.approx(float((w * x0).sum() / w.sum()), abs=5e-3)
    assert torch.allclose(den2.score(xt, 0.5), -(xt - 0.5 * den2(xt, 0.5)) / 0.25)


def test_full_covariance_gaussian_denoiser_matches_the_linear_posterior_mean():
    g = torch.Generator().manual_seed(0)
    a_mat = torch.randn(3, 3, generator=g, dtype=torch.float64)
    cov, mu = a_mat @ a_mat.T + 0.1 * torch.eye(3, dtype=torch.float64), torch.tensor([0.5, -1.0, 2.0])
    den = GaussianDenoiser(mu, cov, VPSchedule("cosine"))
    t = torch.tensor(0.6)
    a, s = float(den.schedule.alpha(t)), float(den.schedule.sigma(t))
    x = torch.randn(4, 3, generator=g)
    # E[x0 | x_t] = mu + a C (a^2 C + s^2 I)^-1 (x_t - a mu)
    gain = a * cov @ torch.linalg.inv(a * a * cov + s * s * torch.eye(3, dtype=torch.float64))
    expected = mu.double() + (x.double() - a * mu.double()) @ gain.T
    assert torch.allclose(den(x, t).double(), expected, atol=1e-4)
    with pytest.raises(ValueError, match="cov must be"):
        GaussianDenoiser(torch.zeros(2), torch.eye(3))


def test_module_denoiser_time_conventions():
    class Probe(nn.Module):
        def forward(self, x, t):
            self.t = t
            return x + 1

    probe = Probe()
    den = ModuleDenoiser(probe, "velocity", RectifiedFlowSchedule(), time_scale=999.0)
    den(torch.zeros(3, 2), 0.25)
    assert torch.allclose(probe.t, torch.full((3,), 0.25 * 999))
    flipped = ModuleDenoiser(probe, "velocity", reverse_time=True)
    out = flipped(torch.zeros(3, 2), torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(probe.t, torch.tensor([1.0, 0.5, 0.0])) and torch.equal(out, -torch.ones(3, 2))


def _tiny_unet2d():
    """A tiny diffusers UNet (the diffusers tests are in the slow tier: importing diffusers takes seconds)."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )


@pytest.mark.slow
def test_diffusers_unet2d_adapter_reads_prediction_type_and_schedule():
    unet = _tiny_unet2d().eval()
    config = {
        "_class_name": "DDIMScheduler",
        "prediction_type": "v_prediction",
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "num_train_timesteps": 1000,
    }
    den = DiffusersDenoiser(unet, scheduler_config=config)
    assert den.prediction_type == "v" and den.schedule.beta_schedule == "scaled_linear"
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        out = den(x, torch.tensor(0.5))
        ref = unet(x, torch.tensor([499.5, 499.5])).sample
    assert torch.allclose(out, ref, atol=1e-6)
    pred = den.predict(x, 0.5)
    a, s = den.schedule.alpha(torch.tensor(0.5)), den.schedule.sigma(torch.tensor(0.5))
    assert torch.allclose(pred.x0, a * x - s * ref, atol=1e-5)
    with torch.no_grad():  # the adapter drives every solver: DPM-Solver++(2M) over 3 steps on the tiny UNet
        assert sample(den, x, uniform_grid(3), "dpmpp_2m").shape == x.shape
    flow = DiffusersDenoiser(unet, scheduler_config={"_class_name": "FlowMatchEulerDiscreteScheduler"})
    assert flow.prediction_type == "velocity" and isinstance(flow.schedule, RectifiedFlowSchedule)
    with pytest.raises(ValueError, match="cannot determine the prediction type"):
        DiffusersDenoiser(unet)


@pytest.mark.slow
def test_diffusers_conditional_unet_adapter_takes_encoder_states():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8,
        norm_num_groups=2,
        attention_head_dim=2,
    ).eval()
    den = DiffusersDenoiser(unet, prediction_type="epsilon")
    x, emb = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 8)
    with torch.no_grad():
        out = den(x, 0.3, emb)
        ref = unet(x, den.schedule.timestep(torch.tensor([0.3, 0.3])), encoder_hidden_states=emb).sample
        assert torch.allclose(out, ref, atol=1e-6)
        assert torch.allclose(den(x, 0.3, {"encoder_hidden_states": emb}), ref, atol=1e-6)
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        den(x, 0.3)
