"""The simulated serving claims reach a verdict at smoke scale, with figures labelled as simulated."""

from __future__ import annotations

import math

import pytest

from thrifty.bench.claim import VERDICTS, ClaimContext
from thrifty.bench.claims import get_claim
from thrifty.serve.sim.cost_model import DEFAULT_DATA_DIR

HAVE_TRACES = (DEFAULT_DATA_DIR / "llm-traces").is_dir()


@pytest.mark.parametrize(
    ("key", "metric"),
    [
        ("sarathi", "simulated.decode_speedup_max"),
        ("batchllm", "simulated.throughput_ratio"),
        pytest.param(
            "sarathi_serve",
            "simulated.capacity_ratio",
            marks=pytest.mark.skipif(not HAVE_TRACES, reason="../shared/data/llm-traces is absent"),
        ),
    ],
)
def test_claim_reaches_a_verdict_at_smoke_scale(key, metric):
    claim = get_claim(key)
    assert claim.field == "serve" and claim.default == (
        key == "sarathi"
    )  # the seconds-long one is in the default suite
    outcome = claim.run(ClaimContext("smoke", [0]))
    assert outcome.verdict in VERDICTS
    assert math.isfinite(outcome.metrics[metric]) and outcome.metrics[metric] > 0
    assert "simulated" in outcome.summary and "cost model" in outcome.details["simulated"]["label"]
    assert not outcome.failures
