from thrifty.bench.claim import HELD, NOT_HELD, ClaimContext
from thrifty.bench.claims import get_claim


def test_sampler_claims_are_registered():
    for key in ("boss", "autodiffusion", "any_size"):
        claim = get_claim(key)
        assert claim.field == "diffusion" and claim.threshold
    assert get_claim("any_size").default and not get_claim("boss").default  # only the seconds-long one by default


def test_any_size_claim_runs_at_smoke_scale_and_saves_its_canvases(tmp_path):
    outcome = get_claim("any_size").run(ClaimContext("smoke", [0], out_dir=str(tmp_path)))
    assert outcome.verdict in (HELD, NOT_HELD)
    assert outcome.metrics["evals_fstd"] == outcome.metrics["evals_fixed"] < outcome.metrics["evals_overlap"]
    assert (tmp_path / "any_size_canvases.png").exists()
    assert {s.metric for s in outcome.series} == {"seam energy", "tile evaluations per canvas", "patch SWD"}
