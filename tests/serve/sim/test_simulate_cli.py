"""``thrifty simulate``: bad input is a usage error; a run writes labelled JSON and a TBT plot."""

from __future__ import annotations

import json

import pytest

from thrifty.cli import main


@pytest.fixture
def trace(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text(
        "num_prefill_tokens,num_decode_tokens\n" + "".join(f"{50 + 7 * i},{2 + i % 6}\n" for i in range(30))
    )
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ["--qps", "0"],
        ["--qps", "-1"],
        ["--qps", "1", "--policy", "no_such_policy"],
        ["--qps", "1", "--gpu", "tpu"],
        ["--qps", "1", "--model", "gpt-9"],
        ["--capacity", "--qps", "1"],
        [],
        ["--qps", "1", "--requests", "0"],
        ["--arrival", "trace", "--qps", "1"],
        ["--qps", "1", "--goodput-tpot", "0"],
        ["--arrival", "trace"],  # this trace has no arrival times
    ],
)
def test_bad_input_is_a_usage_error(argv, trace, capsys):
    assert main(["simulate", "--trace", str(trace), *argv]) == 2
    assert "thrifty simulate: error:" in capsys.readouterr().err


def test_missing_trace_is_a_usage_error(tmp_path, capsys):
    assert main(["simulate", "--trace", str(tmp_path / "nope.csv"), "--qps", "1"]) == 2
    assert "not found" in capsys.readouterr().err


def test_run_and_capacity_write_labelled_results(trace, tmp_path):
    out = tmp_path / "run"
    argv = ["simulate", "--trace", str(trace), "--requests", "12", "--out", str(out), "--budget", "256"]
    policies = ["--policy", "sarathi_serve", "--policy", "prefill_first"]
    assert main([*argv, "--qps", "2", *policies, "--goodput-ttft", "30", "--goodput-tpot", "5"]) == 0
    record = json.loads((out / "simulate.json").read_text())
    assert record["label"] == "simulated, A100-SXM-80GB cost model"
    assert set(record["policies"]) == {"sarathi_serve", "prefill_first"}
    for summary in record["policies"].values():
        assert summary["requests"] == 12 and summary["goodput_slo"] == {"ttft_s": 30.0, "tpot_s": 5.0}
        # every request meets so loose an SLO: goodput is the request throughput
        assert summary["goodput"] == pytest.approx(summary["request_throughput"])
    assert (out / "tbt_cdf.png").stat().st_size > 0
    assert main([*argv, "--capacity", "--gpu", "h100", "--slo-tbt", "0.05"]) == 0
    record = json.loads((out / "simulate.json").read_text())
    assert record["label"] == "simulated, H100-SXM-80GB cost model" and record["tbt_slo_s"] == 0.05
    assert record["policies"]["sarathi_serve"]["capacity_qps"] > 0
