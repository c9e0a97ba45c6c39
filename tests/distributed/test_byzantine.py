import math

import pytest
import torch

from thrifty.distributed.aggregators import nna
from thrifty.distributed.byzantine import (
    ALIE,
    FOE,
    LargeNorm,
    Mimic,
    SignFlip,
    alie_z,
    attack_damage,
    line_maximize,
    make_attack,
)

HONEST = torch.tensor([[1.0, 2.0, 0.0], [3.0, 2.0, 4.0], [2.0, 5.0, 2.0]])
CONTEXT = {"aggregator": "nna", "f": 1, "num_byzantine": 1}


def test_sign_flip_mimic_and_fixed_factor_alie_foe_send_what_they_say():
    center = torch.tensor([2.0, 3.0, 2.0])
    std = torch.tensor([1.0, math.sqrt(3.0), 2.0])  # unbiased std over the three rows
    torch.testing.assert_close(SignFlip()(HONEST, **CONTEXT), -center)
    torch.testing.assert_close(Mimic(target=2)(HONEST, **CONTEXT), HONEST[2])
    torch.testing.assert_close(ALIE(factor=1.5)(HONEST, **CONTEXT), center + 1.5 * std)
    torch.testing.assert_close(FOE(factor=0.25)(HONEST, **CONTEXT), 0.75 * center)
    torch.testing.assert_close(ALIE(factor=3.0)(HONEST[:1], **CONTEXT), HONEST[0])  # one peer: no spread


def test_large_norm_has_the_stated_norm_and_changes_direction():
    attack = LargeNorm(scale=50.0, seed=3)
    first, second = attack(HONEST, **CONTEXT), attack(HONEST, **CONTEXT)
    largest = float(HONEST.norm(dim=1).max())
    assert float(first.norm()) == pytest.approx(50.0 * largest, rel=1e-5)
    assert not torch.allclose(first, second)


def test_alie_z_matches_baruch_et_al():
    # n = 50, f = 12 (their example): s = 26 - 12 = 14, z = Phi^-1(36 / 50) ~ 0.583
    assert alie_z(50, 12) == pytest.approx(0.5828, abs=1e-3)
    with pytest.raises(ValueError, match="honest majority"):
        alie_z(4, 2)


def test_line_maximize_follows_the_official_expansion_and_contraction():
    calls = []

    def score(x: float) -> float:
        calls.append(x)
        return -((x - 5.3) ** 2)

    best = line_maximize(score, evals=16)
    assert len(calls) == 16
    assert calls[:5] == [0.0, 1.0, 3.0, 7.0, 15.0]  # expansion doubles the step until the score drops
    assert abs(best - 5.3) < 0.6
    assert line_maximize(lambda x: -x, evals=4) == 0.0


def test_aimed_attack_does_at_least_as_much_damage_as_no_attack_and_its_damage_is_the_hand_formula():
    g = torch.Generator().manual_seed(0)
    honest = torch.randn(8, 6, generator=g)
    rule, f = "nna", 2
    aimed = ALIE(factor=None)(honest, aggregator=rule, f=f, num_byzantine=2)
    outs = torch.stack([nna(torch.cat([honest, aimed.expand(2, -1)]), f, i) for i in range(8)])
    expected = float((outs.mean(0) - honest.mean(0)).square().sum())
    assert attack_damage(honest, aimed, 2, rule, f) == pytest.approx(expected)
    assert expected >= attack_damage(honest, honest.mean(0), 2, rule, f)
    # against plain averaging the line search keeps growing the factor: damage far above a unit factor's
    foe_mean = FOE(factor=None)(honest, aggregator="mean", f=f, num_byzantine=2)
    center = honest.mean(0)
    assert attack_damage(honest, foe_mean, 2, "mean", f) > 100 * attack_damage(honest, 0 * center, 2, "mean", f)
    middle = torch.cat([honest, foe_mean.expand(2, -1)]).sort(dim=0).values[4:6].mean(0)  # median of 10 rows
    assert attack_damage(honest, foe_mean, 2, "median", f) == pytest.approx(float((middle - center).square().sum()))


def test_make_attack_by_name():
    assert make_attack("alie", factor=None) == ALIE(factor=None)
    with pytest.raises(ValueError, match="valid attacks: sign_flip, large_norm, mimic, alie, foe"):
        make_attack("gaussian")
    with pytest.raises(ValueError, match="target must index"):
        Mimic(target=5)(HONEST, **CONTEXT)
