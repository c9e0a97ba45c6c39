"""Straggler traces and a large-``n`` simulator of the sequential gradient coding schemes.

``gilbert_elliott_trace`` draws bursty stragglers (each worker a two-state Markov chain), ``conforms`` checks a trace
against the ``(B, W, lambda)``-bursty model, ``worker_times`` turns a trace into per-round worker times (latency plus
load-proportional compute, slowed down for stragglers) and ``simulate`` runs a coder of
``thrifty.distributed.sgc.coding`` over them with the official simulator's runtime rule: the master waits ``(1 + mu)``
times the fastest worker's time; slower workers are stragglers if the scheme tolerates the pattern, otherwise the
master waits for everybody and the round records no straggler.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from thrifty.distributed.sgc.coding import Coder

__all__ = ["SimulationResult", "conforms", "gilbert_elliott_trace", "simulate", "worker_times"]


def gilbert_elliott_trace(
    n: int, rounds: int, p_good_bad: float, p_bad_good: float, generator: torch.Generator | None = None
) -> np.ndarray:
    """Bursty stragglers: each worker an independent two-state Markov chain (Gilbert-Elliott), ``True`` = straggling.

    A good worker turns bad with probability ``p_good_bad`` per round and a bad one recovers with ``p_bad_good``
    (mean burst ``1 / p_bad_good``); chains start in the stationary distribution. Returns ``(rounds, n)`` booleans.
    """
    for name, p in (("p_good_bad", p_good_bad), ("p_bad_good", p_bad_good)):
        if not 0 <= p <= 1:
            raise ValueError(f"{name} must be a probability, got {p!r}")
    if p_good_bad + p_bad_good == 0:
        raise ValueError("p_good_bad and p_bad_good cannot both be 0")
    u = torch.rand(rounds, n, generator=generator, dtype=torch.float64).numpy()
    stationary = p_good_bad / (p_good_bad + p_bad_good)
    trace = np.zeros((rounds, n), dtype=bool)
    state = u[0] < stationary
    for r in range(rounds):
        if r:
            state = np.where(state, u[r] >= p_bad_good, u[r] < p_good_bad)
        trace[r] = state
    return trace


def conforms(trace: np.ndarray, b: int, w: int, lambd: int) -> bool:
    """Whether a ``(rounds, n)`` straggler trace obeys the ``(B, W, lambda)``-bursty model in every window."""
    trace = np.asarray(trace, dtype=bool)
    rounds = trace.shape[0]
    for r in range(rounds):
        window = trace[max(0, r - w + 1) : r + 1]
        if window.any(0).sum() > lambd:
            return False
        if (trace[max(0, r - w + 1) : max(0, r - b + 1)].any(0) & trace[r]).any():
            return False
    return True


def worker_times(
    trace: np.ndarray,
    load: float,
    *,
    unit: float,
    latency: float,
    slowdown: float,
    jitter: float,
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """Per-round worker times for a scheme of normalised ``load``: ``latency + unit n load (1 + U(0, jitter))``,
    multiplied by ``slowdown`` for a straggling worker; ``unit n load`` is the compute time of ``load`` jobs' data
    spread over ``n`` workers. The same ``generator`` state gives the same jitter to every scheme."""
    n = trace.shape[1]
    u = torch.rand(trace.shape, generator=generator, dtype=torch.float64).numpy()
    times = latency + unit * n * load * (1 + jitter * u)
    return np.where(trace, times * slowdown, times)


@dataclass
class SimulationResult:
    """Total runtime, per-round durations, rounds where the master waited for every worker, jobs decoded."""

    runtime: float
    durations: list[float] = field(default_factory=list)
    waited_rounds: int = 0
    jobs_decoded: int = 0
    load: float = 0.0


def simulate(coder: Coder, times: np.ndarray, num_jobs: int, mu: float) -> SimulationResult:
    """Run ``num_jobs`` jobs over ``num_jobs + T`` rounds of worker ``times`` (``(rounds, n)``), official runtime rule.

    Raises ``RuntimeError`` if a job is not decodable on time (which the schemes' guarantees rule out).
    """
    rounds = num_jobs + coder.delay
    if times.shape[0] < rounds or times.shape[1] != coder.n:
        raise ValueError(f"times must have at least {rounds} rounds and {coder.n} workers, got {times.shape}")
    coder.reset(num_jobs)
    result = SimulationResult(runtime=0.0, load=coder.load)
    for r in range(rounds):
        t = times[r]
        wait = t.min() * (1 + mu)
        responders = coder.finish_round(t > wait)
        duration = float(wait) if not responders.all() else float(t.max())
        result.durations.append(duration)
        result.waited_rounds += int((t > wait).any() and responders.all())
        job = coder.decodable_job(r)
        if job is not None:
            if not coder.is_decodable(job):
                raise RuntimeError(f"{coder!r}: job {job} not decodable at round {r}")
            result.jobs_decoded += 1
    result.runtime = sum(result.durations)
    return result
