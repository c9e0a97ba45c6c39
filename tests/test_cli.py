import json
import sys
from pathlib import Path

import pytest
import torch

from thrifty.bench.claims import all_claims
from thrifty.catalog import PAPERS
from thrifty.cli import main
from thrifty.cli.listing import claims_markdown, markdown_table

ROOT = Path(__file__).resolve().parent.parent


def test_list_json_has_every_paper(capsys):
    assert main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 63 == len(PAPERS)
    assert {r["status"] for r in rows} <= {"implemented", "partial", "planned"}


def test_list_filters_and_table(capsys):
    assert main(["list", "--status", "implemented", "--json"]) == 0
    keys = {r["key"] for r in json.loads(capsys.readouterr().out)}
    assert {"soap", "sgd_sai", "diffgrad"} <= keys
    assert main(["list", "--field", "optim"]) == 0
    assert "soap" in capsys.readouterr().out


def test_list_bad_field_is_a_one_line_error(capsys):
    assert main(["list", "--field", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "optim" in err


def test_readme_catalogue_table_is_current():
    assert markdown_table(PAPERS) in (ROOT / "README.md").read_text()


def test_readme_claims_table_is_current():
    assert claims_markdown(all_claims().values()) in (ROOT / "README.md").read_text()


def test_list_claims(capsys):
    assert main(["list", "--claims", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["key"] for r in rows} == set(all_claims())
    assert main(["list", "--claims"]) == 0


def test_readme_test_command_is_what_ci_runs():
    command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert command in (ROOT / "README.md").read_text()


@pytest.mark.parametrize(
    "argv, valid",
    [
        (["bench", "nope"], "soap"),
        (["train", "nope", "--optimizer", "adamw"], "charlm"),
        (["train", "logreg", "--optimizer", "nope"], "sgd_sai"),
        (["train", "logreg", "--optimizer", "diffgrad", "--lr", "-1"], "lr must be in"),
        (["train", "logreg", "--optimizer", "sgd", "--opt", "momentum"], "KEY=VALUE"),
    ],
)
def test_bad_names_are_one_line_errors_with_exit_2(argv, valid, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and valid in err and "Traceback" not in err


@pytest.mark.parametrize(
    "device",
    [
        "nope",
        "cuda:99",
        "meta",
        pytest.param("cuda", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")),
    ],
)
def test_train_unavailable_device_is_a_one_line_error(device, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "logreg", "--optimizer", "sgd", "--steps", "2", "--device", device, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"device {device!r} is not available here; use cpu" in err
    assert not out.exists()


def test_train_records_the_device(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "logreg", "--optimizer", "sgd", "--steps", "2", "--device", "cpu", "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["config"]["device"] == "cpu"


def test_train_writes_metrics_and_plot(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "train",
        "logreg",
        "--optimizer",
        "sgd",
        "--lr",
        "0.5",
        "--opt",
        "momentum=0.9",
        "--steps",
        "30",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["optimizer_kwargs"] == {"momentum": 0.9, "lr": 0.5}
    assert record["final"]["val_acc"] > 0.5
    assert record["curve"]["evals"][0]["val_loss"] > record["final"]["val_loss"]
    assert (out / "curve.png").stat().st_size > 1000


def test_train_non_finite_loss_is_recorded_not_a_crash(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "rosenbrock", "--optimizer", "sgd", "--lr", "1e10", "--steps", "20", "--out", str(out)]) == 1
    record = json.loads((out / "metrics.json").read_text())
    assert "non-finite" in record["failure"]
    assert "stopped" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_writes_results_report_and_plots(tmp_path):
    assert main(["bench", "diffgrad", "--scale", "smoke", "--seeds", "2", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    (claim,) = data["claims"]
    assert claim["key"] == "diffgrad" and claim["verdict"] in ("held", "not held", "inconclusive")
    assert len(claim["per_seed"]["adam_val_acc"]) == 2
    assert "diffgrad" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "diffgrad.png").exists()


@pytest.mark.slow
def test_module_entry_point():
    import subprocess

    result = subprocess.run([sys.executable, "-m", "thrifty", "list", "--json"], capture_output=True, text=True)
    assert result.returncode == 0 and len(json.loads(result.stdout)) == 63


@pytest.mark.slow
def test_readme_python_examples_run(tmp_path, monkeypatch):
    import re

    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert (tmp_path / "opt.pt").exists()
    assert namespace["accuracy"] > 0.8


@pytest.mark.slow
def test_train_schedules_and_refinement_from_a_previous_run(tmp_path, capsys):
    first = tmp_path / "linear"
    argv = [
        "train",
        "logreg",
        "--optimizer",
        "sgd",
        "--lr",
        "0.5",
        "--steps",
        "20",
        "--schedule",
        "linear",
        "--warmup",
        "2",
        "--out",
        str(first),
    ]
    assert main(argv) == 0
    record = json.loads((first / "metrics.json").read_text())
    assert record["schedule"] == "linear" and record["warmup"] == 2
    assert len(record["curve"]["grad_norms"]) == len(record["curve"]["grad_l1_norms"]) == 20
    for optimizer, rule in (("sgd", "l2"), ("adamw", "l1")):
        out = tmp_path / f"refined-{optimizer}"
        argv = [
            "train",
            "logreg",
            "--optimizer",
            optimizer,
            "--steps",
            "10",
            "--refine-from",
            str(first / "metrics.json"),
            "--out",
            str(out),
        ]
        assert main(argv) == 0
        refined = json.loads((out / "metrics.json").read_text())
        assert refined["schedule"] == "refined" and refined["refine_rule"] == rule
    out = tmp_path / "override"
    argv = [
        "train",
        "logreg",
        "--optimizer",
        "adamw",
        "--steps",
        "5",
        "--refine-from",
        str(first / "metrics.json"),
        "--refine-rule",
        "l2",
        "--out",
        str(out),
    ]
    assert main(argv) == 0 and json.loads((out / "metrics.json").read_text())["refine_rule"] == "l2"


@pytest.mark.parametrize(
    "content, extra, message",
    [
        ({"curve": {"steps": [1, 2]}}, [], "has no gradient norms (grad_norms)"),
        ({"failure": "loss became non-finite"}, [], "has no gradient norms"),
        ("not json", [], "cannot read --refine-from"),
        (None, [], "cannot read --refine-from"),
        ({"curve": {"grad_norms": [1.0, float("nan")]}}, [], "grad_norms must be finite"),
        ({"curve": {"grad_norms": [1.0, 2.0]}}, ["--schedule", "cosine"], "drop --schedule"),
        ({}, ["--warmup", "-1"], "--warmup must be in"),
    ],
)
def test_train_bad_refine_file_or_schedule_is_a_one_line_error(content, extra, message, tmp_path, capsys):
    path = tmp_path / "metrics.json"
    if content is not None:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    out = tmp_path / "run"
    argv = ["train", "logreg", "--optimizer", "sgd", "--steps", "3", "--out", str(out), *extra]
    if "--warmup" not in extra:
        argv += ["--refine-from", str(path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and message in err
    assert not out.exists()
