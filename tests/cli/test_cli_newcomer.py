"""A newcomer's path through the command line: bad input is one line with exit status 2 (no traceback, nothing run),
piped output keeps whole rows, long runs say what they are doing, and every command and README flag exists."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import socket
from pathlib import Path

import pytest
import torch
from rich.console import Console

from thrifty.bench.claim import ClaimOutcome
from thrifty.bench.claims import get_claim
from thrifty.bench.runner import run_claims
from thrifty.catalog import PAPERS
from thrifty.cli import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[2]


def _one_line_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("soap:fused", "soap has no 'fused' path; its variants: foreach, single"),
        ("frugal:fused", "frugal has no 'fused' path"),
        ("adamw8bit:foreach", "adamw8bit has no 'foreach' path; its variants: fused"),
    ],
)
def test_speed_rejects_a_variant_the_optimizer_lacks(spec, fragment, tmp_path, capsys):
    assert main(["speed", spec, "--rounds", "1", "--out", str(tmp_path)]) == 2
    _one_line_error(capsys, fragment)
    assert not (tmp_path / "speed.json").exists()


@pytest.mark.parametrize("command", [["sample"], ["distill", "scott"]])
def test_diffusion_teacher_file_that_is_not_a_checkpoint(command, tmp_path, capsys):
    bogus = tmp_path / "teacher.pt"
    bogus.write_text("not a checkpoint\n")
    out = tmp_path / "out"
    argv = ["diffusion", *command, "--teacher", str(bogus), "--shape", "2", "--out", str(out)]
    assert main(argv) == 2
    _one_line_error(capsys, "--teacher", "is not a torch.save'd file")
    assert not out.exists()


def test_diffusion_reference_that_is_not_a_tensor_file(tmp_path, capsys):
    from thrifty.diffusion.core.denoiser import ModuleDenoiser
    from thrifty.diffusion.core.schedules import RectifiedFlowSchedule
    from thrifty.diffusion.core.teachers import TimeMLP

    torch.save(ModuleDenoiser(TimeMLP(2, 8, 1), "velocity", RectifiedFlowSchedule()), tmp_path / "t.pt")
    (tmp_path / "ref.pt").write_text("text")
    argv = ["diffusion", "sample", "--teacher", str(tmp_path / "t.pt"), "--shape", "2"]
    assert main([*argv, "--reference", str(tmp_path / "ref.pt"), "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "--reference")


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "logreg", "--optimizer", "sgd", "--steps", "2"],
        ["bench", "diffgrad", "--scale", "smoke"],
        ["speed", "adamw:fused", "--rounds", "1"],
        ["simulate", "--qps", "1", "--requests", "4"],
        ["diffusion", "sample", "--samples", "4"],
        ["diffusion", "distill", "scott", "--steps", "1"],
    ],
)
def test_out_naming_an_existing_file_fails_before_any_work(argv, tmp_path, capsys, monkeypatch):
    import thrifty.bench.runner

    def never(*args, **kwargs):
        raise AssertionError("the command ran before checking --out")

    monkeypatch.setattr(thrifty.bench.runner, "run_claims", never)
    taken = tmp_path / "taken"
    taken.write_text("mine\n")
    assert main([*argv, "--out", str(taken / "sub")]) == 2
    _one_line_error(capsys, f"{str(taken)!r} is a file, not a folder")
    assert taken.read_text() == "mine\n"


@pytest.mark.parametrize(
    "opt, fragments",
    [
        ("betas=0.9", ("--opt betas takes 2 values, e.g. --opt betas=0.9,0.999", "0.9")),
        ("nope=1", ("adamw has no argument 'nope'", "betas")),
    ],
)
def test_train_opt_errors_say_what_the_optimizer_takes(opt, fragments, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "logreg", "--optimizer", "adamw", "--opt", opt, "--steps", "2", "--out", str(out)]) == 2
    _one_line_error(capsys, *fragments)
    assert not out.exists()


def test_train_opt_takes_a_tuple_as_comma_separated_values(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "logreg", "--optimizer", "adamw", "--opt", "betas=0.8,0.99", "--steps", "2", "--out", str(out)]
    assert main(argv) == 0
    assert json.loads((out / "metrics.json").read_text())["optimizer_kwargs"]["betas"] == [0.8, 0.99]


@pytest.mark.parametrize("flag, value", [("--eval-every", "0"), ("--eval-every", "-3"), ("--steps", "0")])
def test_train_counts_below_one_are_rejected(flag, value, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "logreg", "--optimizer", "sgd", "--steps", "3", flag, value, "--out", str(out)]) == 2
    _one_line_error(capsys, f"{flag} must be >= 1, got {value}")
    assert not out.exists()


def test_train_warmup_follows_the_named_schedule(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "logreg", "--optimizer", "sgd", "--steps", "40", "--schedule", "warmup_cosine", "--out", str(out)]
    assert main(argv) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["schedule"] == "warmup_cosine" and record["warmup"] == 2  # 5% of 40 steps


def test_serve_model_that_is_a_file(tmp_path, capsys):
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"\0" * 8)
    assert main(["serve", "--model", str(model), "--port", "0"]) == 2
    _one_line_error(capsys, "is a file: give the checkpoint's folder")


def test_serve_port_in_use_is_one_line_before_the_model_loads(capsys, monkeypatch):
    import thrifty.serve.builder

    monkeypatch.setattr(thrifty.serve.builder, "load_pretrained", lambda *a: pytest.fail("loaded the model"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    _one_line_error(capsys, f"cannot listen on 127.0.0.1:{port}", "--port")


def test_simulate_trace_with_text_in_a_number_column_names_the_file(tmp_path, capsys):
    trace = tmp_path / "mine.csv"
    trace.write_text("num_prefill_tokens,num_decode_tokens\n100,20\n100,twenty\n")
    assert main(["simulate", "--trace", str(trace), "--qps", "1", "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "mine.csv' line 3: num_decode_tokens is 'twenty', not a number")


def test_simulate_runs_from_any_directory_on_the_shipped_traces(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["simulate", "--trace", "code", "--policy", "sarathi_serve", "--qps", "1", "--requests", "8"]
    assert main(argv) == 0
    record = json.loads((tmp_path / "runs" / "simulate" / "simulate.json").read_text())
    assert record["trace"] == "code" and record["requests"] == 8
    lines = capsys.readouterr().out.splitlines()  # title and note whole, on lines of their own
    assert any(
        line.startswith("simulated, A100") and line.endswith("8 requests at 1.0 QPS (poisson)") for line in lines
    )
    assert any(line.startswith("every number: simulated") and line.endswith("TPOT <= 0.2 s") for line in lines)


def test_piped_tables_keep_whole_rows(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert len(rows) == len(PAPERS)  # one line per paper: nothing wrapped
    for paper in PAPERS:
        assert paper.title in out


def test_long_claims_print_a_line_per_phase_when_not_on_a_terminal():
    def fake(ctx):
        ctx.track("tuning", 2)(2)
        ctx.track("training", 3)(3)
        return ClaimOutcome("inconclusive", "nothing compared")

    claim = dataclasses.replace(get_claim("diffgrad"), run=fake)
    log = io.StringIO()
    run_claims([claim], scale="smoke", seeds=1, console=Console(file=log, width=200))
    lines = log.getvalue().splitlines()
    assert "  diffgrad: tuning" in lines and "  diffgrad: training" in lines


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert set(COMMANDS) - {"listing"} | {"list"} <= set(re.findall(r"^\s{4}(\w+)\s", out, flags=re.M))


def test_every_flag_of_the_readme_command_line_block_exists():
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("## The command line") :]
    block = block[block.index("```bash") : block.index("```\n", block.index("```bash") + 7)]
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for line in block.splitlines()[1:]:
        words = line.split()
        if words and words[0] == "thrifty":
            command = words[1]
            current = subparsers[command]
            if command == "diffusion":
                current = next(a for a in current._actions if a.dest == "diffusion_command").choices[words[2]]
        for flag in re.findall(r"(--[a-z][a-z0-9-]*)", line):
            assert flag in current._option_string_actions, f"README shows {flag} for thrifty {command}"
    for flag in ("--claims", "--device", "--adaptive-batch", "--eval-every"):
        assert flag in block


def test_speed_and_bench_write_to_different_default_folders():
    parser = build_parser()
    assert parser.parse_args(["speed"]).out != parser.parse_args(["bench"]).out
