"""The sampler claims are registered; any_size runs at smoke scale and saves its canvas figure."""

import pytest

from thrifty.bench.claim import ClaimContext
from thrifty.bench.claims import get_claim
from thrifty.bench.compare import combine


def test_sampler_claims_are_registered():
    for key in ("boss", "autodiffusion", "any_size"):
        claim = get_claim(key)
        assert claim.field == "diffusion" and claim.threshold
    assert get_claim("any_size").default and not get_claim("boss").default  # only the seconds-long one by default


@pytest.mark.slow
def test_any_size_claim_runs_at_smoke_scale_and_saves_its_canvases(tmp_path):
    outcome = get_claim("any_size").run(ClaimContext("smoke", [0, 1], out_dir=str(tmp_path)))
    assert outcome.comparisons and outcome.verdict == combine(outcome.comparisons, outcome.require)
    assert outcome.metrics["evals_fstd"] == outcome.metrics["evals_fixed"] < outcome.metrics["evals_overlap"]
    assert (tmp_path / "any_size_canvases.png").exists()
    assert {s.metric for s in outcome.series} == {"seam energy", "tile evaluations per canvas", "patch SWD", "patch FD"}
