"""The one comparison rule behind every claim's verdict.

A claim measures per-seed values of a method and of its baseline (or a fixed reference value), says which
direction is better and a practical margin fixed in code before any run, and ``compare`` decides:

- **Effect.** Paired (the claim runs method and baseline on the same seeds, so seed ``i`` of one belongs with
  seed ``i`` of the other): the per-seed differences ``d_i = m_i - b_i`` (``relative=True``: ``m_i / b_i - 1``)
  and their mean. Unpaired: the difference of the means (``relative=True``: divided by the baseline's mean).
  Against a fixed reference value ``r``: ``m_i - r`` (``relative=True``: ``m_i / r - 1``).
- **Interval.** A two-sided 90% Student-t interval for the mean effect over seeds (Welch's degrees of freedom
  when unpaired). Each end is a one-sided 95% bound, as in the two one-sided tests of equivalence testing.
  Figures that do not vary across seeds (counted bytes, a table of bytes moved, a deterministic simulation)
  can be compared with ``exact=True``: the interval is the effect itself.
- **Verdict.** With ``gain`` the effect signed so that positive means the method is better:
  ``superior`` is held when the whole interval of ``gain`` lies above ``+margin`` and not held when it lies
  below; ``noninferior`` ("matches or beats") the same against ``-margin``; ``equivalent`` ("matches within")
  is held when the interval lies inside ``(-margin, +margin)`` and not held when it lies wholly outside.
  Otherwise the comparison is inconclusive: the seeds cannot tell. A comparison with fewer than two seeds
  (and not ``exact``) is inconclusive, never held. A run that failed (NaN) makes it inconclusive; a method
  that never got there on every seed (infinity on its bad side, such as steps to a target it never reached)
  is not held.

A claim combines its judged comparisons with ``combine``: held when every one is held (or, with
``require="any"``, when one is), not held when one cannot be held any more, inconclusive otherwise.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

__all__ = ["CONFIDENCE", "KINDS", "Comparison", "combine", "compare"]

HELD, NOT_HELD, INCONCLUSIVE = "held", "not held", "inconclusive"
CONFIDENCE = 0.90
KINDS = ("superior", "noninferior", "equivalent")


@dataclass(frozen=True)
class Comparison:
    """One judged comparison: the effect of the method over its baseline, its interval, the margin, the verdict.

    ``effect``, ``low`` and ``high`` are in the raw sign (method minus baseline, or the relative change when
    ``relative``); ``better`` says which sign favours the method. ``rule`` restates the decision in words.
    """

    name: str
    kind: str
    better: str
    margin: float
    relative: bool
    paired: bool
    n: int
    effect: float
    low: float
    high: float
    interval: str
    verdict: str
    rule: str
    reason: str = ""
    method_mean: float = math.nan
    baseline_mean: float = math.nan

    def describe(self) -> str:
        """One line: effect, interval, rule and verdict."""
        fmt = _fmt_rel if self.relative else _fmt_abs
        text = f"{self.name}: effect {fmt(self.effect)} [{fmt(self.low)}, {fmt(self.high)}] ({self.interval})"
        text += f"; {self.rule}: {self.verdict}"
        return text + (f" ({self.reason})" if self.reason else "")


def _fmt_rel(x: float) -> str:
    return f"{x:+.2%}" if math.isfinite(x) else f"{x}"


def _fmt_abs(x: float) -> str:
    return f"{x:+.4g}" if math.isfinite(x) else f"{x}"


def _rule(kind: str, better: str, margin: float, relative: bool) -> str:
    m = _fmt_rel(margin)[1:] if relative else f"{margin:.4g}"
    sign = "" if margin == 0 else "+" if better == "higher" else "-"
    anti = "" if margin == 0 else "-" if better == "higher" else "+"
    if kind == "superior":
        side = "above" if better == "higher" else "below"
        return f"held if the interval lies {side} {sign}{m}"
    if kind == "noninferior":
        side = "above" if better == "higher" else "below"
        return f"held if the interval lies {side} {anti}{m}"
    return f"held if the interval lies within +-{m}"


def _interval(values: list[float], confidence: float) -> tuple[float, float, float]:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values)
    half = stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * sd / math.sqrt(len(values))
    return mean, mean - half, mean + half


def _welch(m: list[float], b: list[float], confidence: float, scale: float) -> tuple[float, float, float]:
    vm, vb = statistics.variance(m) / len(m), statistics.variance(b) / len(b)
    effect = (statistics.fmean(m) - statistics.fmean(b)) / scale
    se = math.sqrt(vm + vb)
    if se == 0.0:
        return effect, effect, effect
    df = (vm + vb) ** 2 / (vm**2 / (len(m) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf(0.5 + confidence / 2, df) * se / abs(scale)
    return effect, effect - half, effect + half


def _decide(kind: str, gain_low: float, gain_high: float, margin: float) -> str:
    if kind == "equivalent":
        if -margin < gain_low and gain_high < margin:
            return HELD
        return NOT_HELD if gain_low >= margin or gain_high <= -margin else INCONCLUSIVE
    threshold = margin if kind == "superior" else -margin
    if gain_low > threshold:
        return HELD
    return NOT_HELD if gain_high < threshold else INCONCLUSIVE


def compare(
    name: str,
    method: Sequence[float],
    baseline: Sequence[float] | float,
    *,
    better: str,
    margin: float,
    kind: str = "superior",
    relative: bool = False,
    paired: bool = True,
    exact: bool = False,
    confidence: float = CONFIDENCE,
) -> Comparison:
    """Judge per-seed ``method`` values against ``baseline`` (per-seed values, or one fixed reference value).

    ``better`` is ``"higher"`` or ``"lower"``; ``margin`` (>= 0, in the effect's units: a fraction when
    ``relative``) is the practical margin fixed in code; ``kind`` is ``superior``, ``noninferior`` or
    ``equivalent``. See the module docstring for the rule.
    """
    if better not in ("higher", "lower"):
        raise ValueError(f"better must be 'higher' or 'lower', got {better!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin!r}")
    m = [float(x) for x in method]
    fixed = not isinstance(baseline, Sequence)
    b = [float(baseline)] if fixed else [float(x) for x in baseline]
    paired = paired and not fixed
    if paired and len(m) != len(b):
        raise ValueError(f"paired comparison needs as many method as baseline values, got {len(m)} and {len(b)}")
    rule = _rule(kind, better, margin, relative)
    common = dict(name=name, kind=kind, better=better, margin=margin, relative=relative, paired=paired, rule=rule)
    n = len(m)
    interval = "exact" if exact else f"{confidence:.0%} t, {'paired' if paired else 'one-sample' if fixed else 'Welch'}"

    def result(verdict: str, effect: float, low: float, high: float, reason: str = "") -> Comparison:
        finite_m = [x for x in m if math.isfinite(x)]
        finite_b = [x for x in b if math.isfinite(x)]
        return Comparison(
            **common,
            n=n,
            effect=effect,
            low=low,
            high=high,
            interval=interval,
            verdict=verdict,
            reason=reason,
            method_mean=statistics.fmean(finite_m) if finite_m else math.nan,
            baseline_mean=statistics.fmean(finite_b) if finite_b else math.nan,
        )

    if n == 0 or not b:
        return result(INCONCLUSIVE, math.nan, math.nan, math.nan, "no values")
    bad_inf = math.inf if better == "lower" else -math.inf
    if any(math.isnan(x) for x in m + b):
        return result(INCONCLUSIVE, math.nan, math.nan, math.nan, "a run failed (NaN)")
    if any(math.isinf(x) for x in b):
        return result(INCONCLUSIVE, math.nan, math.nan, math.nan, "the baseline has an infinite value")
    if any(math.isinf(x) for x in m):
        if all(x == bad_inf for x in m):
            return result(NOT_HELD, bad_inf, bad_inf, bad_inf, "the method never got there on any seed")
        return result(INCONCLUSIVE, math.nan, math.nan, math.nan, "the method never got there on some seeds")
    if relative and any(x == 0 for x in b):
        return result(INCONCLUSIVE, math.nan, math.nan, math.nan, "a relative effect over a zero baseline")
    if paired or fixed:
        diffs = [(x / y - 1.0) if relative else (x - y) for x, y in zip(m, b * n if fixed else b, strict=True)]
        if exact or n == 1:
            effect = statistics.fmean(diffs)
            if not exact:
                return result(INCONCLUSIVE, effect, -math.inf, math.inf, f"needs at least 2 seeds, got {n}")
            low = high = effect
        else:
            effect, low, high = _interval(diffs, confidence)
    else:
        scale = abs(statistics.fmean(b)) if relative else 1.0
        effect = (statistics.fmean(m) - statistics.fmean(b)) / scale
        if exact:
            low = high = effect
        elif len(m) < 2 or len(b) < 2:
            return result(INCONCLUSIVE, effect, -math.inf, math.inf, "needs at least 2 seeds on each side")
        else:
            effect, low, high = _welch(m, b, confidence, scale)
    gain_low, gain_high = (low, high) if better == "higher" else (-high, -low)
    return result(_decide(kind, gain_low, gain_high, margin), effect, low, high)


def combine(comparisons: Sequence[Comparison], require: str = "all") -> str:
    """The claim's verdict from its judged comparisons: ``require="all"`` (every clause) or ``"any"``."""
    if not comparisons:
        raise ValueError("a verdict needs at least one comparison")
    verdicts = [c.verdict for c in comparisons]
    if require == "all":
        if NOT_HELD in verdicts:
            return NOT_HELD
        return HELD if all(v == HELD for v in verdicts) else INCONCLUSIVE
    if require == "any":
        if HELD in verdicts:
            return HELD
        return NOT_HELD if all(v == NOT_HELD for v in verdicts) else INCONCLUSIVE
    raise ValueError(f"require must be 'all' or 'any', got {require!r}")
