"""Negative controls for the serving claims: a broken policy is not held, and the baseline policy run under the
method's name is never held.

The claim machinery runs at smoke scale with the method's entry of ``thrifty.serve.sched.SCHEDULERS`` swapped (the
simulator and the engine both build their policy from it): a SARATHI that never puts a decode beside a prefill chunk,
a Sarathi-Serve that runs one request at a time; prefill_first or sarathi_serve under the method's name.
"""

from dataclasses import replace

import pytest

from thrifty.bench.claim import HELD, NOT_HELD
from thrifty.bench.claims import get_claim
from thrifty.bench.runner import run_claims
from thrifty.serve.sched import (
    SCHEDULERS,
    PrefillFirstScheduler,
    SarathiScheduler,
    SarathiServeScheduler,
    SchedulerOutput,
)


class NoPiggyback(SarathiScheduler):
    """SARATHI's chunks, never beside decodes: a step either decodes the running requests or prefills one chunk."""

    def _schedule(self, now: float) -> SchedulerOutput:
        out = SchedulerOutput()
        self._decode_running(out)
        return out if out.chunks else super()._schedule(now)


class OneAtATime(SarathiServeScheduler):
    """Sarathi-Serve's stall-free steps with a single running request: nothing is ever batched."""

    def __init__(self, block_manager, config=None):
        super().__init__(block_manager, config)
        self.config = replace(self.config, max_num_seqs=1)


def _verdict(monkeypatch, key: str, policy: str, cls) -> str:
    monkeypatch.setitem(SCHEDULERS, policy, cls)
    (result,) = run_claims([get_claim(key)], scale="smoke", seeds=3).results
    assert result.error is None, result.error
    return result.verdict


@pytest.mark.slow
def test_broken_policies_are_not_held(monkeypatch):
    assert _verdict(monkeypatch, "sarathi", "sarathi", NoPiggyback) == NOT_HELD


@pytest.mark.slow
def test_a_sarathi_serve_without_batching_is_not_held(monkeypatch):
    assert _verdict(monkeypatch, "sarathi_serve", "sarathi_serve", OneAtATime) == NOT_HELD


@pytest.mark.slow
@pytest.mark.parametrize(
    ("key", "policy", "baseline"),
    [
        ("sarathi", "sarathi", PrefillFirstScheduler),
        ("sarathi_serve", "sarathi_serve", PrefillFirstScheduler),
        ("batchllm", "batchllm", SarathiServeScheduler),
        ("sarathi_serve_cpu", "sarathi_serve", PrefillFirstScheduler),
        ("batchllm_cpu", "batchllm", SarathiServeScheduler),
    ],
)
def test_the_baseline_under_the_method_name_is_never_held(monkeypatch, key, policy, baseline):
    assert _verdict(monkeypatch, key, policy, baseline) != HELD
