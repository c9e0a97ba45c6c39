import argparse
import json

import pytest
import torch
from rich.console import Console

from thrifty.cli import UsageError, main
from thrifty.cli.diffusion import register
from thrifty.diffusion.core.data import eight_gaussians
from thrifty.diffusion.core.denoiser import ModuleDenoiser
from thrifty.diffusion.core.schedules import RectifiedFlowSchedule
from thrifty.diffusion.core.teachers import TimeMLP
from thrifty.diffusion.distill import METHODS, distill, generate


def _teacher():
    torch.manual_seed(0)
    return ModuleDenoiser(TimeMLP(2, 16, 2, time_dim=8), "velocity", RectifiedFlowSchedule()).requires_grad_(False)


class _Parser(argparse.ArgumentParser):
    """``thrifty diffusion``'s parser, taking the words after ``diffusion``."""

    def parse_args(self, argv):
        return super().parse_args(["diffusion", *argv])


def _parser():
    parser = _Parser()
    register(parser.add_subparsers(dest="command"))
    return parser


def test_thrifty_diffusion_distill_is_registered(tmp_path, capsys):
    torch.save(_teacher(), tmp_path / "t.pt")
    argv = ["diffusion", "distill", "instaflow", "--teacher", str(tmp_path / "t.pt"), "--steps", "0"]
    assert main(argv) == 2 and "--steps must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("method", METHODS)
def test_distill_trains_a_sampler_for_every_method(method):
    gm = eight_gaussians()
    teacher = _teacher()
    before = [p.clone() for p in teacher.parameters()]
    student = distill(method, teacher, gm.sample, 2, (2,), batch_size=32, num_pairs=64, student_hidden=8)
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters(), strict=True))  # teacher untouched
    for k in (1, 2):
        x = generate(method, student, torch.randn(8, 2), k)
        assert x.shape == (8, 2) and torch.isfinite(x).all()


def test_distill_command_writes_student_metrics_and_samples(tmp_path):
    path = tmp_path / "teacher.pt"
    torch.save(_teacher(), path)
    out = tmp_path / "run"
    args = _parser().parse_args(
        [
            "distill",
            "scott",
            "--teacher",
            str(path),
            "--shape",
            "2",
            "--steps",
            "2",
            "--batch-size",
            "16",
            "--out",
            str(out),
        ]
    )
    assert args.func(args, Console(quiet=True)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "scott" and set(metrics["quality_by_sampling_steps"]) == {"1", "2", "4"}
    assert all((out / f"samples_{k}step.png").stat().st_size > 0 for k in (1, 2, 4))
    student = torch.load(out / "student.pt", weights_only=False)
    assert generate("scott", student, torch.randn(4, 2), 1).shape == (4, 2)


def test_distill_command_rejects_bad_input(tmp_path):
    parser = _parser()
    for argv, match in (
        (["distill", "instaflow", "--teacher", str(tmp_path / "missing.pt")], "existing file"),
        (["distill", "instaflow", "--teacher", "toy2d", "--toy", "spiral"], "unknown --toy"),
        (["distill", "instaflow", "--steps", "0"], "--steps"),
    ):
        args = parser.parse_args(argv)
        with pytest.raises(UsageError, match=match):
            args.func(args, Console(quiet=True))
    torch.save(_teacher(), tmp_path / "t.pt")
    args = parser.parse_args(["distill", "scott", "--teacher", str(tmp_path / "t.pt")])
    with pytest.raises(UsageError, match="--shape"):
        args.func(args, Console(quiet=True))
    with pytest.raises(ValueError, match="unknown method"):
        distill("lcm", _teacher(), eight_gaussians().sample, 1, (2,))
