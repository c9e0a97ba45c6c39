"""``thrifty diffusion ...``: the diffusion field's commands.

``thrifty diffusion sample --grid uniform|edm|boss|autodiffusion --steps K --teacher toy2d|digits|PATH --out DIR``
samples a teacher on a time grid: ``uniform`` and ``edm`` are fixed grids, ``boss`` fits the Bellman-optimal grid
(``thrifty.diffusion.sampling.boss``, 100-step reference, 100 trajectories) and ``autodiffusion`` searches one
(``thrifty.diffusion.sampling.autodiffusion``, FID-proxy fitness against reference data). ``toy2d`` and ``digits`` are
the cached rectified-flow teachers (trained on first use); ``PATH`` is a ``torch.save``d denoiser module (a
``thrifty.diffusion.core.denoiser.Denoiser``, or any module with ``predict``, ``schedule`` and ``prediction_type``)
sampled with ``--shape``. ``--steps`` takes one K or a sweep (``--steps 1,2,4,8``) to see quality against steps.
Writes ``samples_K{K}.pt``, ``summary.json`` (per K: grid, NFE, metric), ``samples_K{K}.png`` for 2-D or 8x8
samples, and ``quality_vs_steps.png`` for a sweep with a metric.

``thrifty diffusion distill METHOD --teacher toy2d|digits|PATH --steps N --out DIR`` distils the teacher into a
few-step student (``thrifty.diffusion.distill.distill``) and reports its quality at 1, 2 and 4 sampling steps.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from thrifty.cli.errors import UsageError, at_least, output_folder
from thrifty.diffusion.distill.methods import METHODS

__all__ = ["register"]

GRIDS = ("uniform", "edm", "boss", "autodiffusion")
EVAL_STEPS = (1, 2, 4)  # sampling steps a distilled student is judged at


def _load(path: str, flag: str, weights_only: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:  # unpickling a file that is not a checkpoint can raise anything (pickle's docs)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{flag} {path!r} is not a torch.save'd file: {reason}") from None


def _teacher(args: argparse.Namespace) -> tuple[Any, tuple[int, ...], Any]:
    """(denoiser, sample shape, metric or None) for ``--teacher``; raises ``UsageError``."""
    from thrifty.diffusion.core import data, metrics, teachers

    if args.teacher == "toy2d":
        if args.toy not in data.TOY2D:
            raise UsageError(f"unknown --toy {args.toy!r}; choose from {', '.join(data.TOY2D)}")
        ref = data.toy2d(args.toy, 4000, torch.Generator().manual_seed(12345))
        return teachers.toy2d_teacher(args.toy), (2,), ("SWD", ref, lambda x: metrics.sliced_wasserstein(x, ref))
    if args.teacher == "digits":
        ref = data.digits_flat("train")[0]
        return teachers.digits_teacher(), (64,), ("classifier-FD", ref, lambda x: metrics.digits_fd(x, ref))
    path = Path(args.teacher)
    if not path.exists():
        raise UsageError(f"--teacher must be toy2d, digits or an existing file, got {args.teacher!r}")
    if not args.shape:
        raise UsageError("a teacher file needs --shape, the shape of one sample (e.g. 2 or 1,8,8)")
    try:
        shape = tuple(int(v) for v in args.shape.split(","))
    except ValueError:
        raise UsageError(f"--shape must be comma-separated integers, got {args.shape!r}") from None
    den = _load(args.teacher, "--teacher", weights_only=False)
    if not all(hasattr(den, a) for a in ("predict", "schedule", "prediction_type")):
        raise UsageError(
            f"{path} holds a {type(den).__name__}, not a denoiser (needs predict, schedule, prediction_type)"
        )
    metric = None
    if args.reference:
        ref = _load(args.reference, "--reference", weights_only=True)
        if not isinstance(ref, torch.Tensor) or ref.ndim < 2:
            raise UsageError(f"--reference {args.reference!r} must hold a tensor of samples (N, ...)")
        metric = ("SWD", ref, lambda x: metrics.sliced_wasserstein(x.reshape(len(x), -1), ref.reshape(len(ref), -1)))
    return den.eval(), shape, metric


def _grid(args: argparse.Namespace, steps: int, den: Any, shape: tuple[int, ...], metric: Any) -> torch.Tensor:
    from thrifty.diffusion.core.solvers import edm_grid, uniform_grid

    gen = torch.Generator().manual_seed(args.seed + 1)
    if args.grid == "uniform":
        return uniform_grid(steps)
    if args.grid == "edm":
        return edm_grid(steps, den.schedule)
    if args.grid == "boss":
        from thrifty.diffusion.sampling.boss import BellmanStepSizes

        if steps > 100:
            raise UsageError("--grid boss picks steps from a 100-step reference grid: --steps must be <= 100")
        return BellmanStepSizes(den, 100).fit(torch.randn(100, *shape, generator=gen)).grid(steps)
    from thrifty.diffusion.sampling.autodiffusion import AutoDiffusionSearch

    if metric is None:
        raise UsageError("--grid autodiffusion needs reference data for its fitness: pass --reference DATA.pt")
    name, ref, _ = metric
    if name == "classifier-FD":
        from thrifty.diffusion.sampling.autodiffusion import digits_fd_fitness

        fitness = digits_fd_fitness(ref)
    else:
        from thrifty.diffusion.core.metrics import sliced_wasserstein

        def fitness(x: torch.Tensor) -> float:
            return sliced_wasserstein(
                x.reshape(len(x), -1), ref.reshape(len(ref), -1), 128, torch.Generator().manual_seed(0)
            )

    search = AutoDiffusionSearch(den, steps, fitness, epochs=args.search_epochs, seed=args.seed)
    return search.search(torch.randn(500, *shape, generator=gen)).grid


def _save_png(samples: torch.Tensor, path: Path) -> bool:
    """A scatter plot of 2-D samples or a grid of 8x8 images; ``False`` (nothing written) for other shapes."""
    from thrifty._plotting import pyplot

    plt = pyplot()
    flat = samples.reshape(len(samples), -1)
    if flat.shape[1] == 2:
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.scatter(flat[:, 0], flat[:, 1], s=1, alpha=0.4)
        ax.set_aspect("equal")
    elif flat.shape[1] == 64:
        imgs = flat[:64].reshape(-1, 8, 8)
        cols = 8
        canvas = torch.full(((len(imgs) + cols - 1) // cols * 9, cols * 9), float("nan"))
        for i, img in enumerate(imgs):
            r, c = divmod(i, cols)
            canvas[r * 9 : r * 9 + 8, c * 9 : c * 9 + 8] = img
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.imshow(canvas.numpy(), cmap="gray", interpolation="nearest")
        ax.axis("off")
    else:
        return False
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def _parse_steps(text: str) -> list[int]:
    try:
        steps = [int(v) for v in str(text).split(",")]
    except ValueError:
        raise UsageError(f"--steps must be an integer or a comma-separated list, got {text!r}") from None
    if any(k < 1 for k in steps):
        raise UsageError(f"--steps must be >= 1, got {text}")
    return steps


def _save_quality_plot(rows: list[dict[str, Any]], metric: str, path: Path) -> None:
    from thrifty._plotting import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.plot([r["steps"] for r in rows], [r[metric] for r in rows], marker="o")
    ax.set_xlabel("steps")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cmd_sample(args: argparse.Namespace, console: Console) -> int:
    from thrifty.diffusion.core.metrics import CountingDenoiser
    from thrifty.diffusion.core.solvers import SOLVERS, sample

    steps_list = _parse_steps(args.steps)
    at_least("--samples", args.samples)
    at_least("--search-epochs", args.search_epochs)
    if args.solver not in SOLVERS:
        raise UsageError(f"unknown --solver {args.solver!r}; choose from {', '.join(SOLVERS)}")
    out_dir = output_folder(args.out)
    torch.manual_seed(args.seed)
    den, shape, metric = _teacher(args)
    out_dir.mkdir(parents=True, exist_ok=True)
    noise = torch.randn(args.samples, *shape, generator=torch.Generator().manual_seed(args.seed))
    rows: list[dict[str, Any]] = []
    table = Table()
    for col in ("steps", "NFE", "grid", *([metric[0]] if metric else [])):
        table.add_column(col)
    for steps in steps_list:
        grid = _grid(args, steps, den, shape, metric)
        counting = CountingDenoiser(den)
        with torch.no_grad():
            out = sample(counting, noise, grid, args.solver, generator=torch.Generator().manual_seed(args.seed + 2))
        torch.save(out, out_dir / f"samples_K{steps}.pt")
        _save_png(out, out_dir / f"samples_K{steps}.png")
        row: dict[str, Any] = {
            "steps": steps,
            "grid": [round(float(t), 6) for t in grid],
            "nfe_per_sample": counting.nfe,
        }
        if metric is not None:
            row[metric[0]] = metric[2](out)
        rows.append(row)
        table.add_row(
            str(steps),
            str(counting.nfe),
            " ".join(f"{float(t):.3f}" for t in grid),
            *([f"{row[metric[0]]:.4g}"] if metric else []),
        )
    summary = {
        "teacher": args.teacher,
        "grid_kind": args.grid,
        "solver": args.solver,
        "samples": args.samples,
        "seed": args.seed,
        "runs": rows,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if metric is not None and len(rows) > 1:
        _save_quality_plot(rows, metric[0], out_dir / "quality_vs_steps.png")
    console.print(f"thrifty diffusion sample: {args.teacher}, {args.grid} grid, {args.solver}", markup=False)
    console.print(table)
    console.print(f"wrote samples_K*.pt, samples_K*.png, summary.json to {out_dir}")
    return 0


def _data_source(args: argparse.Namespace, teacher: Any, shape: tuple[int, ...]) -> Any:
    """Data samples for the consistency methods: the toy or the digits, or the teacher's own samples for a file."""
    from thrifty.diffusion.core.data import digits_flat, toy2d
    from thrifty.diffusion.core.solvers import sample, uniform_grid

    if args.teacher == "toy2d":
        return lambda n, g: toy2d(args.toy, n, g)
    if args.teacher == "digits":
        x, _ = digits_flat("train")
        return lambda n, g: x[torch.randint(len(x), (n,), generator=g)]

    def teacher_samples(n: int, g: torch.Generator) -> torch.Tensor:
        return sample(teacher, torch.randn((n, *shape), generator=g), uniform_grid(32), "heun")

    return teacher_samples


def _cmd_distill(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import Progress

    from thrifty.diffusion.core.denoiser import Denoiser
    from thrifty.diffusion.core.metrics import sliced_wasserstein
    from thrifty.diffusion.distill.methods import distill, generate

    at_least("--steps", args.steps)
    at_least("--batch-size", args.batch_size)
    out = output_folder(args.out)
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
                batch_size=args.batch_size,
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


def _add_distill_parser(sub: argparse._SubParsersAction) -> None:
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


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``thrifty diffusion`` and its subcommands."""
    parser = subparsers.add_parser("diffusion", help="few-step sampling and distillation of diffusion/flow models")
    sub = parser.add_subparsers(dest="diffusion_command", required=True)
    p = sub.add_parser("sample", help="sample a teacher on a uniform, EDM, BOSS or AutoDiffusion time grid")
    p.add_argument("--grid", choices=GRIDS, default="uniform", help="time grid (default uniform)")
    p.add_argument(
        "--steps", default="4", help="number of steps K, or a comma-separated sweep such as 1,2,4,8 (default 4)"
    )
    p.add_argument("--teacher", default="toy2d", help="toy2d, digits, or a torch.save'd denoiser file (default toy2d)")
    p.add_argument("--toy", default="eight_gaussians", help="2-D toy of --teacher toy2d (default eight_gaussians)")
    p.add_argument("--shape", default=None, help="shape of one sample for a teacher file, e.g. 2 or 1,8,8")
    p.add_argument("--reference", default=None, help="reference data (a torch.save'd tensor) for a teacher file")
    p.add_argument("--solver", default="euler", help="euler (default), heun, dpmpp_2m or stochastic")
    p.add_argument("--samples", type=int, default=1000, help="number of samples (default 1000)")
    p.add_argument("--search-epochs", type=int, default=10, help="AutoDiffusion search epochs (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/diffusion-sample", help="output folder")
    p.set_defaults(func=_cmd_sample)
    _add_distill_parser(sub)
