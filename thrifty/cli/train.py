"""``thrifty train``: train one embedded workload with one optimizer; writes ``metrics.json`` and ``curve.png``."""

from __future__ import annotations

import argparse
import ast
import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from thrifty.cli.errors import UsageError, at_least, output_folder

__all__ = ["register"]


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


def _check_options(name: str, options: dict[str, Any]) -> None:
    """Each ``--opt`` key is an argument of the optimizer, and tuple arguments (``betas``) get tuples."""
    from thrifty.optim import create_optimizer, get_optimizer_class

    params = inspect.signature(get_optimizer_class(name)).parameters
    extra = [k for k, p in inspect.signature(create_optimizer).parameters.items() if p.kind is p.KEYWORD_ONLY]
    for key, value in options.items():
        if key not in params and key not in extra:
            known = ", ".join(k for k in [*params, *extra] if k not in ("self", "params"))
            raise UsageError(f"--opt {key}: {name} has no argument {key!r}; its arguments: {known}")
        default = params[key].default if key in params else None
        if isinstance(default, tuple) and not isinstance(value, (tuple, list)):
            example = ",".join(map(str, default))
            raise UsageError(f"--opt {key} takes {len(default)} values, e.g. --opt {key}={example}; got {value!r}")


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


def _schedule(args: argparse.Namespace, optimizer) -> tuple[Any, dict[str, Any]]:
    """The learning-rate scheduler ``thrifty train`` asked for (or ``None``) and its description for metrics.json."""
    from thrifty.schedules import make_scheduler, refine_rule, refine_schedule, warmup_steps

    if args.refine_from is None:
        if args.refine_rule is not None:
            raise UsageError("--refine-rule needs --refine-from")
        try:
            warmup = warmup_steps(args.schedule, args.steps, args.warmup)
        except ValueError:
            raise UsageError(f"--warmup must be in [0, --steps={args.steps}], got {args.warmup}") from None
        scheduler = make_scheduler(optimizer, args.schedule, args.steps, warmup)
        return scheduler, {"schedule": args.schedule, "warmup": warmup}
    if args.schedule != "constant" or args.warmup:
        raise UsageError("--refine-from sets the whole schedule; drop --schedule and --warmup")
    rule = args.refine_rule or refine_rule(optimizer)
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
    scheduler = make_scheduler(optimizer, tuple(multipliers), args.steps)
    return scheduler, {"schedule": "refined", "refined_from": str(path), "refine_rule": rule}


def _batch_controller(args: argparse.Namespace, task) -> tuple[Any, dict[str, Any]]:
    """The adaptive batch-size controller ``--adaptive-batch`` asked for (or ``None``) and its metrics.json entry."""
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


def _plot(curve, title: str, path: Path) -> Path:
    from thrifty.bench.claim import Series
    from thrifty.bench.report import plot_series

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
    return plot_series(series, title, path)


def _cmd_train(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from thrifty.bench.workloads import NonFiniteLossError, UnknownWorkloadError, fit, get_workload
    from thrifty.optim import UnknownOptimizerError, create_optimizer, get_optimizer_class, state_bytes

    try:
        info = get_workload(args.workload)
        get_optimizer_class(args.optimizer)
    except (UnknownWorkloadError, UnknownOptimizerError) as exc:
        raise UsageError(str(exc)) from None
    at_least("--steps", args.steps)
    at_least("--eval-every", args.eval_every)
    at_least("--batch-size", args.batch_size)
    out = output_folder(args.out)
    config: dict[str, Any] = {"device": _check_device(args.device)}
    if args.batch_size is not None:
        config["batch_size"] = args.batch_size
    opt_kwargs = _parse_opt(args.opt)
    if args.lr is not None:
        opt_kwargs["lr"] = args.lr
    _check_options(args.optimizer, opt_kwargs)
    try:
        task = info.make(seed=args.seed, **config)
        optimizer = create_optimizer(task.model, args.optimizer, **opt_kwargs)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{args.optimizer}({', '.join(f'{k}={v!r}' for k, v in opt_kwargs.items())}): {exc}") from None
    scheduler, schedule = _schedule(args, optimizer)
    controller, adaptive = _batch_controller(args, task)
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
        if curve.batch_sizes:
            record["batch_sizes"] = curve.batch_sizes
        plot = _plot(curve, f"{args.workload} / {args.optimizer}", out / "curve.png")
        finals = ", ".join(f"{k} {v:.4f}" for k, v in curve.evals[-1].items())
        console.print(
            f"{args.workload} with {args.optimizer}: {finals} after {args.steps} steps "
            f"({curve.seconds[-1]:.1f} s training); wrote {out / 'metrics.json'} and {plot}"
        )
    else:
        console.print(f"[red]training stopped:[/red] {record['failure']}")
    (out / "metrics.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    return status


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``thrifty train``."""
    from thrifty.schedules import SCHEDULES

    p = subparsers.add_parser("train", help="train one embedded workload with one optimizer")
    p.add_argument("workload", help="digits_mlp, digits_cnn, charlm, logreg, rosenbrock, noisy_quadratic")
    p.add_argument("--optimizer", required=True, help="a name from the optimizer registry, e.g. soap, adamw")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the optimizer's)")
    p.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra optimizer argument, e.g. --opt momentum=0.9 or --opt betas=0.9,0.99 (repeatable)",
    )
    p.add_argument("--steps", type=int, default=300, help="optimizer steps (default 300)")
    p.add_argument(
        "--eval-every", type=int, default=None, metavar="N", help="validate every N steps (default: the workload's)"
    )
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: the workload's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device to train on, e.g. cpu, cuda, cuda:1 (default: cpu)")
    p.add_argument(
        "--schedule",
        default="constant",
        choices=SCHEDULES,
        help="learning-rate schedule: constant (default), linear or cosine decay to zero; the warmup_ ones warm up "
        "over 5%% of the steps first",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=None,
        metavar="N",
        help="linear warm-up steps before the schedule (default: 5%% of --steps for warmup_*, else 0)",
    )
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
