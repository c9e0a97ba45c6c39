"""The ``thrifty`` command: ``list`` the catalogue, ``bench`` the claims, ``speed`` optimizers, ``train`` a workload."""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["main"]

# Field folders that add their own subcommands: each module has ``register(subparsers)``, which adds parsers
# whose ``func(args, console) -> int`` may raise ``UsageError``.
_FIELD_CLIS: tuple[str, ...] = ("thrifty.serve.cli", "thrifty.diffusion.cli")

_STATUS_STYLE = {"implemented": "green", "partial": "yellow", "planned": "dim"}


class UsageError(Exception):
    """Bad input from the command line: printed as one line, exit status 2."""


def _cmd_list(args: argparse.Namespace, console: Console) -> int:
    from thrifty.catalog import PAPERS, filter_papers

    if args.claims:
        return _list_claims(args, console)
    try:
        papers = filter_papers(field=args.field, status=args.status)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps([p.to_dict() for p in papers], indent=1))
        return 0
    if args.markdown:
        print(markdown_table(papers))
        return 0
    counts = {s: sum(p.status == s for p in PAPERS) for s in ("implemented", "partial", "planned")}
    table = Table(
        title=f"thrifty catalogue: {len(papers)} of {len(PAPERS)} papers "
        f"({', '.join(f'{n} {s}' for s, n in counts.items())})"
    )
    for column in ("field", "key", "status", "arXiv", "title", "import"):
        table.add_column(column, overflow="fold")
    for p in papers:
        status = f"[{_STATUS_STYLE[p.status]}]{p.status}"
        table.add_row(p.field, p.key, status, p.arxiv or "?", p.title, p.import_path)
    console.print(table)
    return 0


def _list_claims(args: argparse.Namespace, console: Console) -> int:
    from thrifty.bench.claims import all_claims

    claims = [c for c in all_claims().values() if args.field is None or c.field == args.field]
    if args.json:
        print(json.dumps([{**c.describe(), "default": c.default} for c in claims], indent=1))
        return 0
    if args.markdown:
        print(claims_markdown(claims))
        return 0
    table = Table(title=f"{len(claims)} claims ({sum(c.default for c in claims)} in the default suite)")
    for column in ("claim", "field", "default", "measured", "held when"):
        table.add_column(column, overflow="fold")
    for c in claims:
        table.add_row(c.key, c.field, "yes" if c.default else "", c.measures, c.threshold)
    console.print(table)
    return 0


def claims_markdown(claims) -> str:
    """The registered claims as a Markdown table (the README's claims table is this output)."""
    lines = ["| claim | in default suite | what is measured | held when |", "|---|---|---|---|"]
    for c in claims:
        lines.append(f"| `{c.key}` | {'yes' if c.default else ''} | {c.measures} | {c.threshold} |")
    return "\n".join(lines)


def markdown_table(papers) -> str:
    """The catalogue as a Markdown table (the README's table is this output)."""
    lines = ["| field | key | status | arXiv | paper |", "|---|---|---|---|---|"]
    for p in papers:
        status = p.status + (f" ({p.note})" if p.status == "partial" and p.note else "")
        lines.append(f"| {p.field} | `{p.key}` | {status} | {p.arxiv or '?'} | {p.title} |")
    return "\n".join(lines)


def _select_claims(args: argparse.Namespace):
    from thrifty.bench.claims import UnknownClaimError, all_claims, default_claims, get_claim

    if args.keys:
        try:
            return [get_claim(k) for k in args.keys]
        except UnknownClaimError as exc:
            raise UsageError(str(exc)) from None
    claims = list(all_claims().values()) if args.all or args.field else default_claims()
    if args.field:
        claims = [c for c in claims if c.field == args.field]
        if not claims:
            fields = sorted({c.field for c in all_claims().values()})
            raise UsageError(f"no claims in field {args.field!r}; fields with claims: {', '.join(fields)}")
    return claims


def _cmd_bench(args: argparse.Namespace, console: Console) -> int:
    from thrifty.bench.report import summary_table, write_all
    from thrifty.bench.runner import run_claims

    claims = _select_claims(args)
    if args.seeds is not None and args.seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {args.seeds}")
    run = run_claims(claims, scale=args.scale, seeds=args.seeds, out_dir=args.out)
    results, report = write_all(run, args.out)
    console.print(summary_table(run))
    console.print(f"wrote {results} and {report}")
    return 1 if run.failed else 0


def _parse_opt(pairs: Sequence[str]) -> dict[str, Any]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--opt expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return options


def _check_device(name: str) -> str:
    """``name`` if it is a torch device this machine has; a ``UsageError`` naming the usable ones otherwise."""
    import torch

    usable = ["cpu"]
    accelerator = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    if accelerator is not None:
        usable.append(accelerator.type)
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        device = None
    if device is not None and (
        device.type == "cpu"
        or (
            accelerator is not None
            and device.type == accelerator.type
            and (device.index is None or device.index < torch.accelerator.device_count())
        )
    ):
        return name
    raise UsageError(f"device {name!r} is not available here; use {' or '.join(usable)}")


def _refine_rule(optimizer_name: str, optimizer) -> str:
    """The refinement rule of arXiv 2310.07831 for an optimizer: l1 for coordinate-wise adaptive (Adam-type:
    anything with ``betas``, and AdaGrad), l2 for SGD-type."""
    return "l1" if "betas" in optimizer.defaults or optimizer_name == "adagrad" else "l2"


def _train_schedule(args: argparse.Namespace, optimizer) -> tuple[Any, dict[str, Any]]:
    """The learning-rate scheduler ``thrifty train`` asked for (or ``None``) and its description for metrics.json."""
    import torch

    from thrifty.schedules import RefinedLR, linear_decay_factor, refine_schedule, warmup_cosine_factor

    if not 0 <= args.warmup <= args.steps:
        raise UsageError(f"--warmup must be in [0, --steps={args.steps}], got {args.warmup}")
    if args.refine_from is None:
        if args.refine_rule is not None:
            raise UsageError("--refine-rule needs --refine-from")
        warmup = args.warmup
        if args.schedule == "constant":
            factor = (lambda step: min(1.0, (step + 1) / warmup)) if warmup else None
        elif args.schedule == "cosine":
            factor = warmup_cosine_factor(args.steps, warmup)
        else:
            factor = linear_decay_factor(args.steps, warmup)
        scheduler = None if factor is None else torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return scheduler, {"schedule": args.schedule, "warmup": warmup}
    if args.schedule != "constant" or args.warmup:
        raise UsageError("--refine-from sets the whole schedule; drop --schedule and --warmup")
    rule = args.refine_rule or _refine_rule(args.optimizer, optimizer)
    field = "grad_l1_norms" if rule == "l1" else "grad_norms"
    path = Path(args.refine_from)
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read --refine-from {str(path)!r}: {exc}") from None
    curve = previous.get("curve") if isinstance(previous, dict) else None
    norms = curve.get(field) if isinstance(curve, dict) else None
    if not norms:
        raise UsageError(
            f"{str(path)!r} has no gradient norms ({field}); refine from the metrics.json of a thrifty train run"
        )
    try:
        multipliers = refine_schedule(norms, rule=rule)
    except ValueError as exc:
        raise UsageError(f"cannot refine from {str(path)!r}: {exc}") from None
    scheduler = RefinedLR(optimizer, multipliers, total_steps=args.steps)
    return scheduler, {"schedule": "refined", "refined_from": str(path), "refine_rule": rule}


def _batch_controller(args: argparse.Namespace, task) -> tuple[Any, dict[str, Any]]:
    """The adaptive batch-size controller ``--adaptive-batch`` asked for (or ``None``) and its metrics.json entry."""
    import inspect

    from thrifty.batching import AdaptiveBatchSize

    if not args.adaptive_batch:
        if args.max_batch_size is not None or args.batch_eta is not None:
            raise UsageError("--max-batch-size and --batch-eta need --adaptive-batch")
        return None, {}
    try:
        inspect.signature(task.next_batch).bind(1)
    except TypeError:
        raise UsageError(
            f"--adaptive-batch needs batches that can change size (digits_mlp, digits_cnn, logreg); "
            f"{args.workload}'s cannot"
        ) from None
    start = task.config["batch_size"]
    cap = 1024 if args.max_batch_size is None else args.max_batch_size
    eta = 0.5 if args.batch_eta is None else args.batch_eta
    try:
        controller = AdaptiveBatchSize(start, cap, test="norm", eta=eta)
    except ValueError as exc:
        raise UsageError(f"--adaptive-batch: {exc}") from None
    return controller, {"adaptive_batch": {"test": "norm", "eta": eta, "batch_size": start, "max_batch_size": cap}}


def _cmd_train(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from thrifty.bench.claim import Series
    from thrifty.bench.report import plot_series
    from thrifty.bench.workloads import NonFiniteLossError, UnknownWorkloadError, fit, get_workload
    from thrifty.optim import UnknownOptimizerError, create_optimizer, get_optimizer_class, state_bytes

    try:
        info = get_workload(args.workload)
        get_optimizer_class(args.optimizer)
    except (UnknownWorkloadError, UnknownOptimizerError) as exc:
        raise UsageError(str(exc)) from None
    if args.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {args.steps}")
    config: dict[str, Any] = {"device": _check_device(args.device)}
    if args.batch_size is not None:
        config["batch_size"] = args.batch_size
    opt_kwargs = _parse_opt(args.opt)
    if args.lr is not None:
        opt_kwargs["lr"] = args.lr
    try:
        task = info.make(seed=args.seed, **config)
        optimizer = create_optimizer(task.model, args.optimizer, **opt_kwargs)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    scheduler, schedule = _train_schedule(args, optimizer)
    controller, adaptive = _batch_controller(args, task)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "workload": args.workload,
        "optimizer": args.optimizer,
        "optimizer_kwargs": opt_kwargs,
        "config": task.config,
        "seed": args.seed,
        "steps": args.steps,
        **schedule,
        **adaptive,
    }
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
    )
    status = 0
    with Progress(*columns, console=console, transient=not console.is_terminal) as progress:
        bar = progress.add_task(f"{args.workload} / {args.optimizer}", total=args.steps, loss=float("nan"))
        try:
            curve = fit(
                task,
                optimizer,
                args.steps,
                eval_every=args.eval_every,
                scheduler=scheduler,
                on_step=lambda step, loss: progress.update(bar, advance=1, loss=loss),
                batch_controller=controller,
            )
        except NonFiniteLossError as exc:
            curve = None
            record["failure"] = str(exc)
            status = 1
        except ValueError as exc:
            if controller is None:
                raise
            raise UsageError(f"--adaptive-batch: {exc} (lower --max-batch-size)") from None
    if curve is not None:
        record.update(
            curve=curve.to_dict(),
            final=curve.evals[-1],
            state_bytes=state_bytes(optimizer),
            seconds=curve.seconds[-1],
        )
        train = Series("train loss", "loss")
        train.add(curve.steps, curve.seconds, curve.train_loss)
        val = Series("validation loss", "loss")
        val.add(curve.eval_steps, curve.eval_seconds, curve.metric("val_loss"))
        series = [train, val]
        if "val_acc" in curve.evals[-1]:
            acc = Series("validation accuracy", "val_acc")
            acc.add(curve.eval_steps, curve.eval_seconds, curve.metric("val_acc"))
            series.append(acc)
        if curve.batch_sizes:
            sizes = Series("batch size (norm test)", "batch_size")
            sizes.add(curve.steps, curve.seconds, curve.batch_sizes)
            series.append(sizes)
            record["batch_sizes"] = curve.batch_sizes
        plot = plot_series(series, f"{args.workload} / {args.optimizer}", out / "curve.png")
        finals = ", ".join(f"{k} {v:.4f}" for k, v in curve.evals[-1].items())
        console.print(
            f"{args.workload} with {args.optimizer}: {finals} after {args.steps} steps "
            f"({curve.seconds[-1]:.1f} s training); wrote {out / 'metrics.json'} and {plot}"
        )
    else:
        console.print(f"[red]training stopped:[/red] {record['failure']}")
    (out / "metrics.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    return status


def _cmd_speed(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import Progress

    from thrifty import _native
    from thrifty.bench.env import environment
    from thrifty.bench.speed import DEFAULT_SPECS, MODELS, measure_speed, parse_spec
    from thrifty.optim import UnknownOptimizerError

    specs = args.specs or list(DEFAULT_SPECS)
    try:
        for spec in specs:
            parse_spec(spec)
        if args.model not in MODELS:
            raise ValueError(f"unknown model {args.model!r}; valid models: {', '.join(MODELS)}")
        if args.rounds < 1:
            raise ValueError(f"--rounds must be at least 1, got {args.rounds}")
    except (UnknownOptimizerError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task(f"timing {len(specs)} optimizers on {args.model}", total=args.rounds)
        results = measure_speed(specs, args.model, args.rounds, on_round=lambda r: progress.advance(bar))
    table = Table(
        title=f"optimizer step on {args.model}, {args.rounds} interleaved rounds",
        caption="x fused / x foreach: median step time over torch AdamW's; B/param: state bytes per parameter; "
        "x state: state bytes over AdamW's",
    )
    table.add_column("optimizer", no_wrap=True)
    for column in ("median ms", "mean ms", "1st ms", "x fused", "x foreach", "state MB", "B/param", "x state"):
        table.add_column(column, justify="right")
    for r in results:
        state_ratio = f"{r.state_ratio_vs_adamw:.2f}" if r.state_ratio_vs_adamw is not None else "-"
        table.add_row(
            r.spec,
            f"{r.median_ms:.1f}",
            f"{r.mean_ms:.1f}",
            f"{r.first_step_ms:.0f}",
            f"{r.ratio_vs['adamw:fused']:.2f}",
            f"{r.ratio_vs['adamw:foreach']:.2f}",
            f"{r.state_bytes / 2**20:.1f}",
            f"{r.state_bytes_per_param:.2f}",
            state_ratio,
        )
    console.print(table)
    native = _native.build_seconds()
    if native is not None:
        built = "unavailable" if _native.library() is None else "ready"
        console.print(f"native kernels {built} after {native:.2f} s (a build, or a load from the cache), in 1st ms")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "model": args.model,
        "rounds": args.rounds,
        "environment": environment(),
        "native_kernel_seconds": native,
        "results": [r.to_dict() for r in results],
    }
    (out / "speed.json").write_text(json.dumps(record, indent=1) + "\n")
    console.print(f"wrote {out / 'speed.json'}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="thrifty", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="print the catalogue of the 63 papers and their status")
    p.add_argument("--field", help="only papers of this field (optim, serve, diffusion, ...)")
    p.add_argument("--status", help="only papers with this status (implemented, partial, planned)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument("--claims", action="store_true", help="list the registered claims instead of the papers")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("bench", help="run claims and write results.json and report.md")
    p.add_argument("keys", nargs="*", metavar="KEY", help="claims to run (default: the curated suite)")
    p.add_argument(
        "--scale",
        default="quick",
        choices=("smoke", "quick", "full"),
        help="smoke: seconds; quick: minutes on a CPU (default); full: GPU-sized",
    )
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (default 2 smoke, 3 quick, 5 full)")
    p.add_argument("--out", default="bench-results", help="output folder (default: bench-results)")
    p.add_argument("--all", action="store_true", help="run every implemented claim")
    p.add_argument("--field", help="run every claim of one field")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("speed", help="time optimizer steps and count state bytes against torch's AdamW")
    p.add_argument(
        "specs",
        nargs="*",
        metavar="NAME[:VARIANT]",
        help="optimizers, e.g. soap sgd_sai:single adamw:fused (variants: fused, foreach, single, reference)",
    )
    p.add_argument(
        "--model",
        default="mlp8m",
        help="mlp8m (8.4M parameters, default), mlp1m, mlp50k, or charlm (the char-LM workload)",
    )
    p.add_argument("--rounds", type=int, default=20, help="interleaved timing rounds (default 20)")
    p.add_argument("--out", default="bench-results", help="output folder for speed.json")
    p.set_defaults(func=_cmd_speed)

    p = sub.add_parser("train", help="train one embedded workload with one optimizer")
    p.add_argument("workload", help="digits_mlp, digits_cnn, charlm, logreg, rosenbrock, noisy_quadratic")
    p.add_argument("--optimizer", required=True, help="a name from the optimizer registry, e.g. soap, adamw")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the optimizer's)")
    p.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra optimizer argument, e.g. --opt momentum=0.9 (repeatable)",
    )
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device to train on, e.g. cpu, cuda, cuda:1 (default: cpu)")
    p.add_argument(
        "--schedule",
        default="constant",
        choices=("constant", "cosine", "linear"),
        help="learning-rate schedule after --warmup: constant (default), cosine or linear decay to zero",
    )
    p.add_argument("--warmup", type=int, default=0, metavar="N", help="linear warm-up steps (default 0)")
    p.add_argument(
        "--refine-from",
        default=None,
        metavar="METRICS.json",
        help="refine the schedule from the gradient norms an earlier thrifty train logged (arXiv 2310.07831)",
    )
    p.add_argument(
        "--refine-rule",
        default=None,
        choices=("l1", "l2"),
        help="refinement rule (default: l1 for Adam-type optimizers, l2 for SGD-type)",
    )
    p.add_argument(
        "--adaptive-batch",
        action="store_true",
        help="grow the batch from --batch-size by the norm test of AdAdaGrad (arXiv 2402.11215), any optimizer; "
        "metrics.json and curve.png record the batch size of every step",
    )
    p.add_argument("--max-batch-size", type=int, default=None, help="cap of --adaptive-batch (default 1024)")
    p.add_argument(
        "--batch-eta", type=float, default=None, help="norm-test tolerance eta of --adaptive-batch (default 0.5)"
    )
    p.add_argument("--out", default="runs/train", help="output folder for metrics.json and curve.png")
    p.set_defaults(func=_cmd_train)

    for name in _FIELD_CLIS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``thrifty`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    console = Console()
    try:
        return args.func(args, console)
    except UsageError as exc:
        print(f"thrifty {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
