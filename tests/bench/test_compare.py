"""The one comparison rule: intervals against hand-computed t intervals, every branch of the decision."""

import math
import statistics

import pytest
from scipy import stats

from thrifty.bench.compare import combine, compare

HELD, NOT_HELD, INCONCLUSIVE = "held", "not held", "inconclusive"


def test_paired_interval_is_the_t_interval_of_the_differences():
    m, b = [1.0, 1.3, 1.1, 1.4], [0.5, 0.6, 0.7, 0.6]
    d = [x - y for x, y in zip(m, b, strict=True)]
    half = stats.t.ppf(0.95, 3) * statistics.stdev(d) / 2.0
    c = compare("x", m, b, better="higher", margin=0.1)
    assert c.effect == pytest.approx(statistics.fmean(d))
    assert (c.low, c.high) == pytest.approx((statistics.fmean(d) - half, statistics.fmean(d) + half))
    assert c.paired and c.n == 4 and c.verdict == HELD


def test_welch_interval_when_unpaired():
    m, b = [1.0, 1.2, 1.4], [0.1, 0.5, 0.2, 0.4]
    c = compare("x", m, b, better="higher", margin=0.0, paired=False)
    vm, vb = statistics.variance(m) / 3, statistics.variance(b) / 4
    df = (vm + vb) ** 2 / (vm**2 / 2 + vb**2 / 3)
    half = stats.t.ppf(0.95, df) * math.sqrt(vm + vb)
    assert (c.low, c.high) == pytest.approx((c.effect - half, c.effect + half))
    assert c.effect == pytest.approx(1.2 - 0.3) and c.verdict == HELD


@pytest.mark.parametrize(
    ("kind", "values", "verdict"),
    [
        ("superior", [0.30, 0.31, 0.29], HELD),  # gain ~0.3 > margin 0.1
        ("superior", [0.05, 0.06, 0.04], NOT_HELD),  # better, but by less than the margin
        ("superior", [0.0, 0.3, -0.1], INCONCLUSIVE),
        ("noninferior", [-0.05, -0.04, -0.06], HELD),  # a little worse, within the margin
        ("noninferior", [-0.3, -0.31, -0.29], NOT_HELD),
        ("equivalent", [0.01, -0.02, 0.0], HELD),
        ("equivalent", [0.5, 0.52, 0.49], NOT_HELD),
        ("equivalent", [0.05, -0.05, 0.15], INCONCLUSIVE),
    ],
)
def test_decision_for_each_kind(kind, values, verdict):
    assert compare("x", values, 0.0, better="higher", margin=0.1, kind=kind).verdict == verdict


def test_lower_is_better_mirrors_higher():
    up = compare("x", [1.3, 1.31, 1.29], [1.0, 1.0, 1.0], better="higher", margin=0.1)
    down = compare("x", [0.7, 0.69, 0.71], [1.0, 1.0, 1.0], better="lower", margin=0.1)
    assert up.verdict == down.verdict == HELD
    assert compare("x", [1.3, 1.31, 1.29], [1.0] * 3, better="lower", margin=0.1).verdict == NOT_HELD


def test_relative_effects():
    c = compare("x", [0.99, 1.01, 1.0], [1.0, 1.0, 1.0], better="lower", margin=0.02, kind="noninferior", relative=True)
    assert c.verdict == HELD and c.effect == pytest.approx(0.0)
    assert compare("x", [1.1, 1.12], [1.0, 1.0], better="lower", margin=0.02, relative=True).verdict == NOT_HELD


def test_one_seed_is_never_held_unless_exact():
    c = compare("x", [5.0], [0.0], better="higher", margin=0.1)
    assert c.verdict == INCONCLUSIVE and "at least 2 seeds" in c.reason
    assert compare("x", [5.0], 0.0, better="higher", margin=0.1).verdict == INCONCLUSIVE
    assert compare("x", [5.0], 0.0, better="higher", margin=0.1, exact=True).verdict == HELD


def test_failed_and_unreached_runs():
    assert compare("x", [math.nan, 1.0], [0.0, 0.0], better="higher", margin=0.0).verdict == INCONCLUSIVE
    never = compare("x", [math.inf, math.inf], 1.0, better="lower", margin=0.2)
    assert never.verdict == NOT_HELD and "never" in never.reason
    assert compare("x", [math.inf, 0.5], 1.0, better="lower", margin=0.2).verdict == INCONCLUSIVE


def test_equal_method_and_baseline_is_never_held():
    values = [0.9, 0.95, 0.97, 0.92]
    for kind in ("superior", "noninferior"):
        c = compare("x", values, values, better="higher", margin=0.01, kind=kind)
        assert c.verdict == (NOT_HELD if kind == "superior" else HELD)
    # noise alone around equality: superiority never clears a positive margin
    noisy = compare("x", [0.9, 0.95, 0.97], [0.95, 0.9, 0.96], better="higher", margin=0.01)
    assert noisy.verdict in (NOT_HELD, INCONCLUSIVE)


def test_combine():
    h = compare("h", [1.0, 1.0], 0.0, better="higher", margin=0.1)
    n = compare("n", [-1.0, -1.0], 0.0, better="higher", margin=0.1)
    i = compare("i", [1.0], 0.0, better="higher", margin=0.1)
    assert combine([h, h]) == HELD and combine([h, i]) == INCONCLUSIVE and combine([h, n, i]) == NOT_HELD
    assert combine([n, h], require="any") == HELD and combine([n, n], require="any") == NOT_HELD
    assert combine([n, i], require="any") == INCONCLUSIVE
    with pytest.raises(ValueError):
        combine([])


def test_bad_arguments():
    with pytest.raises(ValueError, match="better"):
        compare("x", [1.0], 0.0, better="up", margin=0.1)
    with pytest.raises(ValueError, match="kind"):
        compare("x", [1.0], 0.0, better="higher", margin=0.1, kind="bigger")
    with pytest.raises(ValueError, match="margin"):
        compare("x", [1.0], 0.0, better="higher", margin=-1.0)
    with pytest.raises(ValueError, match="as many"):
        compare("x", [1.0, 2.0], [1.0], better="higher", margin=0.1)
