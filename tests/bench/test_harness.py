import json
import math

import pytest
import torch

from thrifty.bench.claim import HELD, INCONCLUSIVE, NOT_HELD, Claim, ClaimContext, ClaimOutcome, Series
from thrifty.bench.compare import compare
from thrifty.bench.experiment import make_scheduler
from thrifty.bench.report import write_all
from thrifty.bench.runner import run_claims


def _outcome(ctx: ClaimContext) -> ClaimOutcome:
    series = Series("method", "val_loss")
    for seed in ctx.seeds:
        series.add([0, 1, 2], [0.0, 0.1 + seed, 0.2 + seed], [1.0, 0.5 - 0.1 * seed, 0.25])
    per_seed = [float(s) for s in ctx.seeds]
    gain = compare("x", [1.0 + 0.01 * s for s in ctx.seeds], [0.0] * len(ctx.seeds), better="higher", margin=0.1)
    return ClaimOutcome.judged(
        f"{len(ctx.seeds)} seeds",
        [gain],
        metrics={"x": 1.5, "nan": math.nan},
        per_seed={"x": per_seed},
        series=[series],
    )


def _crash(ctx: ClaimContext) -> ClaimOutcome:
    raise RuntimeError("boom")


def _claim(key, run):
    return Claim(key=key, statement="s", measures="m", threshold="t", run=run)


def test_run_claims_writes_results_and_report(tmp_path):
    run = run_claims([_claim("soap", _outcome)], scale="smoke", seeds=3)
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
    assert "| soap | held | 3 seeds [x: effect +1.01" in report
    assert "| x | 1.01 | 0 | 1.01 | [" in report  # the judged comparison's table row
    assert claim["comparisons"][0]["verdict"] == HELD and claim["paper"].startswith("SOAP")
    assert (tmp_path / "soap.png").stat().st_size > 1000


def test_a_crashing_claim_is_recorded_and_the_others_still_run(tmp_path):
    run = run_claims([_claim("diffgrad", _crash), _claim("sgd_sai", _outcome)], scale="smoke", seeds=1)
    assert run.failed
    assert [r.verdict for r in run.results] == ["error", INCONCLUSIVE]  # one seed: the rule cannot hold
    assert "boom" in run.results[0].error
    _, report = write_all(run, tmp_path)
    assert "The claim crashed" in report.read_text()


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="scale"):
        run_claims([], scale="huge")
    with pytest.raises(ValueError, match="verdict"):
        ClaimOutcome("maybe", "x")
    with pytest.raises(ValueError, match="needs the comparisons"):
        ClaimOutcome(HELD, "a verdict with nothing behind it")
    held = compare("x", [1.0, 1.1], [0.0, 0.0], better="higher", margin=0.1)
    with pytest.raises(ValueError, match="disagrees"):
        ClaimOutcome(NOT_HELD, "x", comparisons=[held])
    with pytest.raises(ValueError, match="seeds"):
        ClaimContext("smoke", [])
    with pytest.raises(ValueError, match="apart from the judged seeds"):
        ClaimContext("smoke", [0, 1], tuning_seeds=[1])


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


def test_terminal_summary_keeps_bracketed_text():
    from rich.console import Console

    from thrifty.bench.report import summary_table

    run = run_claims([_claim("soap", _outcome)], scale="smoke", seeds=3)
    run.results[0].outcome.summary = "[simulated, A100] 3 seeds"
    console = Console(width=200, record=True)
    console.print(summary_table(run))
    assert "[simulated, A100] 3 seeds" in console.export_text()


def test_report_renders_details_as_a_table_and_embeds_saved_figures(tmp_path):
    figure = tmp_path / "soap_samples.png"
    figure.write_bytes(b"\x89PNG\r\n\x1a\n")

    def with_details(ctx):
        outcome = _outcome(ctx)
        outcome.details = {"grid": {"0.1": 1.5, "0.3": 2.5}, "note": "a | b", "samples_png": str(figure)}
        return outcome

    run = run_claims([_claim("soap", with_details)], scale="smoke", seeds=3)
    _, report = write_all(run, tmp_path)
    text = report.read_text()
    assert "| grid: 0.1 | 1.5 |" in text and "| note | a \\| b |" in text
    assert "![samples_png](soap_samples.png)" in text
