import json
import math

import pytest
import torch

from thrifty.bench.claim import HELD, NOT_HELD, Claim, ClaimContext, ClaimOutcome, Series
from thrifty.bench.experiment import make_scheduler
from thrifty.bench.report import write_all
from thrifty.bench.runner import run_claims


def _outcome(ctx: ClaimContext) -> ClaimOutcome:
    series = Series("method", "val_loss")
    for seed in ctx.seeds:
        series.add([0, 1, 2], [0.0, 0.1 + seed, 0.2 + seed], [1.0, 0.5 - 0.1 * seed, 0.25])
    per_seed = [float(s) for s in ctx.seeds]
    return ClaimOutcome(
        HELD if len(ctx.seeds) > 1 else NOT_HELD,
        f"{len(ctx.seeds)} seeds",
        metrics={"x": 1.5, "nan": math.nan},
        per_seed={"x": per_seed},
        series=[series],
    )


def _crash(ctx: ClaimContext) -> ClaimOutcome:
    raise RuntimeError("boom")


def _claim(key, run):
    return Claim(key=key, paper="paper", field="optim", statement="s", measures="m", threshold="t", run=run)


def test_run_claims_writes_results_and_report(tmp_path):
    run = run_claims([_claim("fake", _outcome)], scale="smoke", seeds=3)
    assert not run.failed
    results_path, report_path = write_all(run, tmp_path)
    data = json.loads(results_path.read_text())
    assert data["scale"] == "smoke" and data["seeds"] == [0, 1, 2]
    for key in ("torch", "torch_threads", "cpu_model", "git_commit", "python"):
        assert key in data["environment"]
    (claim,) = data["claims"]
    assert claim["verdict"] == HELD
    assert claim["per_seed"] == {"x": [0.0, 1.0, 2.0]}
    assert claim["metrics"]["nan"] is None  # NaN is written as JSON null, not as invalid JSON
    report = report_path.read_text()
    assert "| fake | held | 3 seeds |" in report
    assert (tmp_path / "fake.png").stat().st_size > 1000


def test_a_crashing_claim_is_recorded_and_the_others_still_run(tmp_path):
    run = run_claims([_claim("bad", _crash), _claim("good", _outcome)], scale="smoke", seeds=1)
    assert run.failed
    assert [r.verdict for r in run.results] == ["error", NOT_HELD]
    assert "boom" in run.results[0].error
    _, report = write_all(run, tmp_path)
    assert "The claim crashed" in report.read_text()


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="scale"):
        run_claims([], scale="huge")
    with pytest.raises(ValueError, match="verdict"):
        ClaimOutcome("maybe", "x")
    with pytest.raises(ValueError, match="seeds"):
        ClaimContext("smoke", [])


def test_make_scheduler_names_and_refined_tuples():
    def lrs(schedule, steps=20):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        sched = make_scheduler(opt, schedule, steps)
        out = []
        for _ in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            if sched is not None:
                sched.step()
        return out

    assert lrs("constant") == [1.0] * 20
    assert lrs("linear")[:2] == pytest.approx([1.0, 0.95])
    assert lrs("warmup_linear")[:3] == pytest.approx([1.0, 1.0, 1 - 1 / 19])  # 1 warm-up step (5% of 20)
    assert lrs("warmup_cosine")[-1] < 0.01
    assert lrs((1.0, 0.0), steps=3) == pytest.approx([1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="schedule must be one of"):
        lrs("step")
