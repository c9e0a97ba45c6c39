import math

import pytest
import torch

from thrifty.diffusion.core.schedules import EDMSchedule, RectifiedFlowSchedule, VPSchedule


def test_vp_linear_matches_ddpm_alphas_cumprod_at_integer_timesteps():
    sch = VPSchedule("linear", 1e-4, 0.02, 1000)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alpha_bar = torch.cumprod(1 - betas, 0)
    for k in (0, 1, 500, 999):
        t = sch.t_from_timestep(k)
        assert float(sch.alpha(t)) ** 2 == pytest.approx(float(alpha_bar[k]), rel=1e-5)
        assert float(sch.timestep(t)) == pytest.approx(k)
    t = torch.linspace(0, 1, 37)
    assert torch.allclose(sch.alpha(t) ** 2 + sch.sigma(t) ** 2, torch.ones(37), atol=1e-6)


def test_scaled_linear_and_cosine_betas():
    sd = VPSchedule("scaled_linear", 0.00085, 0.012)
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    assert float(sd.alpha(torch.tensor(1.0))) ** 2 == pytest.approx(float(torch.prod(1 - betas)), rel=1e-4)
    cos = VPSchedule("squaredcos_cap_v2")
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    # alpha_bar[k] = f((k + 1) / N) / f(0) away from the cap
    assert float(cos.alpha(cos.t_from_timestep(499))) ** 2 == pytest.approx(f(500 / 1000) / f(0), rel=1e-4)
    with pytest.raises(ValueError, match="beta_schedule"):
        VPSchedule("quadratic")


def test_rectified_flow_and_edm_closed_forms():
    rf = RectifiedFlowSchedule()
    t = torch.tensor([0.0, 0.25, 1.0])
    assert torch.equal(rf.alpha(t), 1 - t) and torch.equal(rf.sigma(t), t)
    edm = EDMSchedule(0.002, 80.0, 7.0)
    assert float(edm.sigma(torch.tensor(1.0))) == pytest.approx(80.0, rel=1e-5)
    assert float(edm.sigma(torch.tensor(0.0))) == pytest.approx(0.002, rel=1e-5)
    mid = torch.tensor(0.4)
    assert float(edm.t_from_sigma(edm.sigma(mid))) == pytest.approx(0.4, abs=1e-5)


@pytest.mark.parametrize("sch", [RectifiedFlowSchedule(), VPSchedule("cosine"), EDMSchedule()])
def test_log_snr_inverse_and_derivatives(sch):
    t = torch.tensor([0.1, 0.3, 0.7, 0.9], dtype=torch.float64)
    assert torch.allclose(sch.t_from_log_snr(sch.log_snr(t)), t, atol=1e-5)
    da, ds = sch.derivatives(t)
    h = 1e-4
    assert torch.allclose(da, (sch.alpha(t + h) - sch.alpha(t - h)) / (2 * h), rtol=1e-3, atol=1e-4)
    assert torch.allclose(ds, (sch.sigma(t + h) - sch.sigma(t - h)) / (2 * h), rtol=1e-3, atol=1e-4)
