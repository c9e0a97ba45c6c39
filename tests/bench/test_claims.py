"""Every registered claim runs at smoke scale through the one comparison rule, and claims and catalogue agree."""

import math

import pytest

from thrifty.bench.claim import VERDICTS
from thrifty.bench.claims import UnknownClaimError, all_claims, default_claims, get_claim
from thrifty.bench.compare import combine
from thrifty.bench.runner import run_claims
from thrifty.catalog import PAPERS


def test_every_implemented_paper_has_a_claim_and_every_claim_a_paper():
    claims = all_claims()
    methods = {m: p for p in PAPERS for m in p.methods}
    for key, claim in claims.items():
        assert key in methods, f"claim {key} belongs to no catalogue entry"
        assert methods[key].status in ("implemented", "partial"), f"claim {key} for a planned paper"
        assert claim.field == methods[key].field
    for paper in PAPERS:
        if paper.status == "implemented":
            assert paper.resolve() is not None
            assert any(m in claims for m in paper.methods), f"{paper.key} is implemented but has no claim"


def test_registry_is_sorted_whatever_the_import_order():
    assert list(all_claims()) == sorted(all_claims())


def test_default_suite_and_lookup():
    assert {c.key for c in default_claims()} <= set(all_claims())
    with pytest.raises(UnknownClaimError, match="valid claims: .*soap"):
        get_claim("nope")


@pytest.mark.parametrize("key", sorted(all_claims()))
@pytest.mark.slow
def test_claim_runs_at_smoke_scale(key):
    run = run_claims([get_claim(key)], scale="smoke", seeds=2)
    (result,) = run.results
    assert result.error is None, result.error
    assert result.verdict in VERDICTS
    outcome = result.outcome
    assert outcome.summary
    # The one rule: the verdict is what the judged comparisons combine to, and there are some.
    assert outcome.comparisons, f"{key} judged nothing through thrifty.bench.compare"
    assert outcome.verdict == combine(outcome.comparisons, outcome.require)
    for tuning in outcome.tuning:  # choices are made on tuning seeds, never on judged ones
        assert not set(tuning["tuning_seeds"]) & set(run.seeds)
    assert outcome.metrics and any(math.isfinite(v) for v in outcome.metrics.values())
    # The evidence: curves per seed (training runs), or per-seed figures where it is not a curve (capacity
    # searches, simulations), which the report tabulates.
    assert (outcome.series and all(len(s.values) >= 1 for s in outcome.series)) or (
        outcome.per_seed and all(len(v) >= 1 for v in outcome.per_seed.values())
    )
