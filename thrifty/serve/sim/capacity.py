"""Capacity search: the highest request rate a deployment serves within its latency SLOs (Sarathi-Serve, §5).

As in microsoft/sarathi-serve's ``capacity_search``: a rate is *under the SLO* when the P99 time between tokens is
at most ``tbt_slo`` and the median scheduling delay at most ``delay_slo`` (2 s); the capacity is found by binary
search between 0 and ``2 * start_qps``, widening the upper end while probes pass, and stopping when the bracket is
narrower than ``granularity`` (a fraction of the rate) or after ``max_iterations`` probes. Each probe replays the
same requests (same lengths and prompts, arrival gaps scaled to the rate: common random numbers), which keeps the
pass/fail answer monotone in the rate in practice.

The strict SLO of the paper is five times the decode-iteration time of a batch of 32 at 4k context (and the
relaxed one 25 times); ``strict_tbt_slo`` computes it from the cost model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from thrifty.serve.sim.cost_model import CostModel
from thrifty.serve.sim.simulator import SimResult, Simulator
from thrifty.serve.sim.workloads import RequestSpec

__all__ = ["CapacityResult", "Probe", "SimulatedLoad", "capacity_search", "relaxed_tbt_slo", "strict_tbt_slo"]


def strict_tbt_slo(cost_model: CostModel, batch_size: int = 32, context: int = 4096) -> float:
    """Five times the decode-iteration time at ``batch_size`` sequences of ``context`` tokens."""
    return 5.0 * cost_model.decode_iteration_time(batch_size, context)


def relaxed_tbt_slo(cost_model: CostModel, batch_size: int = 32, context: int = 4096) -> float:
    """Twenty-five times the decode-iteration time at ``batch_size`` sequences of ``context`` tokens."""
    return 25.0 * cost_model.decode_iteration_time(batch_size, context)


@dataclass(frozen=True)
class Probe:
    """One evaluated rate: the P99 TBT and median scheduling delay measured there, and the verdict."""

    qps: float
    tbt_p99: float
    delay_p50: float
    under_slo: bool


@dataclass
class CapacityResult:
    """The highest passing rate found (0 if none passed) and every probe in order."""

    capacity_qps: float
    tbt_slo: float
    delay_slo: float
    probes: list[Probe] = field(default_factory=list)

    @property
    def lowest_failing_qps(self) -> float:
        failing = [p.qps for p in self.probes if not p.under_slo]
        return min(failing) if failing else math.inf

    def to_dict(self) -> dict:
        return {
            "capacity_qps": self.capacity_qps,
            "tbt_slo_s": self.tbt_slo,
            "delay_slo_s": self.delay_slo,
            "probes": [p.__dict__ for p in self.probes],
        }


def capacity_search(
    evaluate: Callable[[float], tuple[float, float]],
    tbt_slo: float,
    delay_slo: float = 2.0,
    start_qps: float = 1.0,
    granularity: float = 0.02,
    max_iterations: int = 20,
) -> CapacityResult:
    """Binary search of the highest rate whose ``evaluate(qps) -> (P99 TBT, P50 scheduling delay)`` meets the SLOs.

    The upper end starts at ``2 * start_qps`` and doubles while the probe at the midpoint passes with a scheduling
    delay under a quarter of its SLO or within 20% of the upper end (Sarathi-Serve widens the same way); the search
    stops once ``right - left < granularity * left``.
    """
    if tbt_slo <= 0 or delay_slo <= 0 or start_qps <= 0 or granularity <= 0 or max_iterations < 1:
        raise ValueError("tbt_slo, delay_slo, start_qps and granularity must be > 0 and max_iterations >= 1")
    result = CapacityResult(0.0, tbt_slo, delay_slo)
    left, right = 0.0, 2.0 * start_qps
    lowest_fail = math.inf
    for _ in range(max_iterations):
        if left > 0 and right - left < granularity * left:
            break
        qps = (left + right) / 2
        tbt, delay = evaluate(qps)
        ok = tbt <= tbt_slo and delay <= delay_slo
        result.probes.append(Probe(qps, float(tbt), float(delay), ok))
        if ok:
            result.capacity_qps = max(result.capacity_qps, qps)
            left = qps
            if delay < delay_slo / 4 or qps > 0.8 * right:
                right = min(2 * right, lowest_fail)
        else:
            lowest_fail = min(lowest_fail, qps)
            right = qps
    return result


class SimulatedLoad:
    """``evaluate(qps)`` for ``capacity_search`` from a ``Simulator`` and fixed requests.

    ``specs`` are generated once at rate 1 (``trace_requests(..., qps=1.0)``); a probe at ``qps`` divides their
    arrival times by ``qps``. Every probe's ``SimResult`` is kept in ``results`` by rate.
    """

    def __init__(self, simulator: Simulator, specs: list[RequestSpec]) -> None:
        if not specs:
            raise ValueError("need at least one request")
        self.simulator = simulator
        self.specs = specs
        self.results: dict[float, SimResult] = {}

    def run(self, qps: float) -> SimResult:
        if qps <= 0:
            raise ValueError(f"qps must be > 0, got {qps}")
        specs = [replace(s, arrival_time=s.arrival_time / qps) for s in self.specs]
        result = self.simulator.run(specs)
        self.results[qps] = result
        return result

    def __call__(self, qps: float) -> tuple[float, float]:
        result = self.run(qps)
        return result.quantile("tbt", 0.99), result.quantile("scheduling_delay", 0.5)
