import argparse
import copy
import json

import pytest
import torch
from rich.console import Console

from thrifty.cli import UsageError, main
from thrifty.cli.diffusion import register
from thrifty.diffusion.core.data import eight_gaussians
from thrifty.diffusion.core.denoiser import ModuleDenoiser
from thrifty.diffusion.core.metrics import sliced_wasserstein
from thrifty.diffusion.core.schedules import RectifiedFlowSchedule
from thrifty.diffusion.core.solvers import sample, uniform_grid
from thrifty.diffusion.core.teachers import TimeMLP, train_flow_matching
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


@pytest.fixture(scope="module")
def curved_teacher():
    """A small rectified flow trained briefly (200 steps) on eight Gaussians: still far from the data, but its paths
    bend (one Euler step lands far from 32), so a few-step student has something to learn from it."""
    torch.manual_seed(0)
    net = TimeMLP(2, 32, 2)
    train_flow_matching(net, eight_gaussians().sample, 200, batch_size=128, lr=3e-3)
    return ModuleDenoiser(net, "velocity", RectifiedFlowSchedule()).requires_grad_(False)


def _starting_student(method, teacher):
    """The student ``distill`` starts from: the teacher's weights (instaflow's 2-RF, hyper_sd, scott), a fresh small
    ``TimeMLP`` (slimflow) or the teacher's network re-initialised (improved_lct)."""
    if method == "slimflow":
        torch.manual_seed(1)
        return ModuleDenoiser(TimeMLP(2, 16, 2), "velocity", RectifiedFlowSchedule())
    if method == "improved_lct":
        torch.manual_seed(1)
        fresh = copy.deepcopy(teacher)
        for module in fresh.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        return fresh
    return teacher


# Sampling steps at which a student is compared with the one it started from: two, and one for improved_lct, whose
# two-step samples re-noise a one-step sample that 60 steps of consistency training have only begun to improve.
COMPARED_AT = {"instaflow": 2, "slimflow": 2, "hyper_sd": 2, "scott": 2, "improved_lct": 1}


@pytest.mark.parametrize("method", METHODS)
def test_distill_trains_a_sampler_for_every_method(method, curved_teacher):
    """Every method's student samples in 1 and 2 steps, and its samples are closer (sliced Wasserstein, by 3% at
    least) to what it learns from than those of the student it started from: the teacher's 32-step samples, or the
    data for improved_lct (consistency training, which never runs the teacher)."""
    gm = eight_gaussians()
    before = [p.clone() for p in curved_teacher.parameters()]
    student = distill(
        method, curved_teacher, gm.sample, 60, (2,), batch_size=128, num_pairs=256, student_hidden=16, seed=0
    )
    assert all(torch.equal(a, b) for a, b in zip(before, curved_teacher.parameters(), strict=True))  # untouched
    noise = torch.randn(1024, 2, generator=torch.Generator().manual_seed(2))
    k = COMPARED_AT[method]
    with torch.no_grad():
        samples = {steps: generate(method, student, noise, steps) for steps in (1, 2)}
        untrained = generate(method, _starting_student(method, curved_teacher), noise, k)
        if method == "improved_lct":
            target = gm.sample(1024, torch.Generator().manual_seed(3))
        else:
            target = sample(curved_teacher, noise, uniform_grid(32), "euler")
    assert all(x.shape == (1024, 2) and torch.isfinite(x).all() for x in samples.values())

    def swd(x):
        return sliced_wasserstein(x, target, generator=torch.Generator().manual_seed(4))

    assert swd(samples[k]) < 0.97 * swd(untrained)


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
