"""``thrifty diffusion distill METHOD --teacher toy2d|digits|PATH --steps N --out DIR``: distil a teacher into a
few-step student and report its quality at 1, 2 and 4 sampling steps (teacher loading as ``thrifty diffusion sample``).

``distill(method, teacher, data, steps)`` is the same as a function: it trains a student with one of the five
trajectory distillers on a teacher (any ``Denoiser``) and a source of data samples, and ``generate`` samples it in
``k`` steps the way its method samples (a one-step flow student by Euler steps, consistency students by TCD's
``gamma = 1`` multistep sampling).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from thrifty.diffusion.core.denoiser import Denoiser, ModuleDenoiser
from thrifty.diffusion.core.schedules import RectifiedFlowSchedule
from thrifty.diffusion.core.solvers import sample, uniform_grid
from thrifty.diffusion.core.teachers import TimeMLP
from thrifty.diffusion.distill._core import consistency_sample, frozen_copy
from thrifty.diffusion.distill.hyper_sd import HyperSD
from thrifty.diffusion.distill.improved_lct import ImprovedLCT
from thrifty.diffusion.distill.instaflow import InstaFlow
from thrifty.diffusion.distill.scott import SCott
from thrifty.diffusion.distill.slimflow import SlimFlow

__all__ = ["METHODS", "add_distill_parser", "distill", "generate"]

METHODS = ("instaflow", "slimflow", "hyper_sd", "scott", "improved_lct")
CONSISTENCY = ("hyper_sd", "scott", "improved_lct")
EVAL_STEPS = (1, 2, 4)

DataSource = Callable[[int, torch.Generator], Tensor]


def _fresh_copy(module: nn.Module, seed: int) -> nn.Module:
    """A copy of ``module`` with every submodule's parameters re-initialised (``reset_parameters``)."""
    torch.manual_seed(seed)
    fresh = copy.deepcopy(module).train().requires_grad_(True)
    for sub in fresh.modules():
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
    return fresh


def _batches(data: DataSource, batch_size: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    while True:
        yield data(batch_size, gen)


def distill(
    method: str,
    teacher: Denoiser,
    data: DataSource,
    steps: int,
    sample_shape: tuple[int, ...],
    batch_size: int = 256,
    num_pairs: int = 4000,
    student_hidden: int = 64,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> Denoiser:
    """Train a few-step student of ``teacher`` with ``method`` for ``steps`` iterations (per stage for the two-stage
    flow methods) and return it. ``data(n, generator)`` draws data samples (consistency methods noise them).

    instaflow: 2-RF from the teacher, then one-step distillation; slimflow: a small ``TimeMLP`` (``student_hidden``)
    by annealing reflow, then flow-guided distillation (flat data only); hyper_sd: TSCD 8-4-2-1 from the teacher's
    weights; scott: SDE-teacher consistency distillation from the teacher's weights; improved_lct: consistency
    training of a re-initialised copy of the teacher's network (the teacher only fixes the architecture).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    gen = torch.Generator().manual_seed(seed)
    if method == "instaflow":
        insta = InstaFlow(teacher, sample_shape, batch_size=batch_size, generator=gen)
        two_rf = insta.reflow(num_pairs, steps, on_step=on_step)
        return frozen_copy(insta.distill(frozen_copy(two_rf), num_pairs, steps, on_step=on_step))
    if method == "slimflow":
        if len(sample_shape) != 1:
            raise ValueError(f"slimflow's small TimeMLP student takes flat samples, got shape {sample_shape}")
        torch.manual_seed(seed)
        student = ModuleDenoiser(TimeMLP(sample_shape[0], student_hidden, 2), "velocity", RectifiedFlowSchedule())
        slim = SlimFlow(teacher, sample_shape, batch_size=batch_size, generator=gen)
        two_rf = frozen_copy(slim.annealing_reflow(student, steps, slim.pairs(teacher, num_pairs), on_step=on_step))
        return frozen_copy(slim.distill(two_rf, steps, slim.pairs(two_rf, num_pairs), on_step=on_step))
    batches = _batches(data, batch_size, seed)
    if method == "improved_lct":
        student = _fresh_copy(teacher, seed)
        ImprovedLCT(student, steps, s1=160, generator=gen).fit(batches, steps, on_step)
        return frozen_copy(student)
    student = frozen_copy(teacher).requires_grad_(True)
    if method == "hyper_sd":
        HyperSD(teacher, student, num_timesteps=16, generator=gen).fit(batches, steps, on_step=on_step)
    else:
        SCott(student, teacher, generator=gen).fit(batches, steps, on_step)
    return frozen_copy(student)


@torch.no_grad()
def generate(method: str, student: Denoiser, noise: Tensor, steps: int, seed: int = 0) -> Tensor:
    """Sample ``student`` of ``method`` in ``steps`` steps from ``noise``."""
    if method in CONSISTENCY:
        return consistency_sample(student, noise, steps, generator=torch.Generator().manual_seed(seed))
    return sample(student, noise, uniform_grid(steps), "euler")


def _data_source(args: argparse.Namespace, teacher: Denoiser, shape: tuple[int, ...]) -> DataSource:
    """Data samples for the consistency methods: the toy or the digits, or the teacher's own samples for a file."""
    from thrifty.diffusion.core.data import digits_flat, toy2d

    if args.teacher == "toy2d":
        return lambda n, g: toy2d(args.toy, n, g)
    if args.teacher == "digits":
        x, _ = digits_flat("train")
        return lambda n, g: x[torch.randint(len(x), (n,), generator=g)]

    def teacher_samples(n: int, g: torch.Generator) -> Tensor:
        return sample(teacher, torch.randn((n, *shape), generator=g), uniform_grid(32), "heun")

    return teacher_samples


def _cmd_distill(args: argparse.Namespace, console) -> int:
    from rich.progress import Progress

    from thrifty.cli import UsageError
    from thrifty.diffusion.cli import _save_png, _teacher
    from thrifty.diffusion.core.metrics import sliced_wasserstein

    if args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    teacher, shape, metric = _teacher(args)
    if not isinstance(teacher, Denoiser):
        raise UsageError(f"{args.teacher} holds a {type(teacher).__name__}; distillers need a thrifty Denoiser")
    data = _data_source(args, teacher, shape)
    stages = 2 if args.method in ("instaflow", "slimflow") else 1
    start = time.perf_counter()
    with Progress(transient=True, console=console) as bar:
        task = bar.add_task(f"{args.method}: training", total=stages * args.steps)
        try:
            student = distill(
                args.method,
                teacher,
                data,
                args.steps,
                shape,
                args.batch_size,
                seed=args.seed,
                on_step=lambda step, loss: bar.advance(task),
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    seconds = time.perf_counter() - start
    gen = torch.Generator().manual_seed(args.seed + 1)
    noise = torch.randn((1000, *shape), generator=gen)
    if metric is None:  # a teacher file without --reference: compare with the teacher's own samples
        reference = data(1000, gen)
        metric = ("SWD to teacher samples", reference, lambda x: sliced_wasserstein(x.reshape(1000, -1), reference))
    name, _, measure = metric
    quality, samples = {}, {}
    for k in EVAL_STEPS:
        samples[k] = generate(args.method, student, noise, k, args.seed)
        quality[k] = measure(samples[k])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(student, out / "student.pt")
    (out / "metrics.json").write_text(
        json.dumps(
            {
                "method": args.method,
                "teacher": args.teacher,
                "steps": args.steps,
                "training_seconds": round(seconds, 2),
                "metric": name,
                "quality_by_sampling_steps": {str(k): v for k, v in quality.items()},
            },
            indent=2,
        )
    )
    pngs = [f"samples_{k}step.png" for k in EVAL_STEPS if _save_png(samples[k], out / f"samples_{k}step.png")]
    for k, v in quality.items():
        console.print(f"{args.method}: {k} step{'s' if k > 1 else ''}: {name} {v:.4f}")
    console.print(f"wrote {out / 'student.pt'}, {out / 'metrics.json'}" + "".join(f", {p}" for p in pngs))
    return 0


def add_distill_parser(sub) -> None:
    """Add ``distill`` to the ``thrifty diffusion`` subcommands."""
    p = sub.add_parser(
        "distill",
        help="distil a teacher into a few-step student (InstaFlow, SlimFlow, Hyper-SD, SCott, improved LCT)",
        description="Train a few-step student with a trajectory distiller and write student.pt, metrics.json "
        "(quality at 1, 2, 4 sampling steps) and samples_<k>step.png.",
    )
    p.add_argument("method", choices=METHODS)
    p.add_argument(
        "--teacher",
        default="toy2d",
        help="toy2d, digits (cached teachers trained on first use) or a torch.save'd thrifty Denoiser file (then "
        "--shape is required; data for the consistency methods are the teacher's own samples)",
    )
    p.add_argument("--toy", default="eight_gaussians", help="2-D toy of --teacher toy2d (default eight_gaussians)")
    p.add_argument("--shape", default=None, help="shape of one sample for a teacher file, e.g. 2 or 1,8,8")
    p.add_argument("--reference", default=None, help="reference data (a torch.save'd tensor) for a teacher file")
    p.add_argument("--steps", type=int, default=1000, help="training iterations (per stage for instaflow/slimflow)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/distill", help="output folder")
    p.set_defaults(func=_cmd_distill)
