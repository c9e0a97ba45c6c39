"""``thrifty speed``: time optimizer steps against torch's AdamW in interleaved rounds and count state bytes."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from thrifty.cli.errors import UsageError, at_least, output_folder

__all__ = ["register"]


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
    except (UnknownOptimizerError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    if args.model not in MODELS:
        raise UsageError(f"unknown model {args.model!r}; valid models: {', '.join(MODELS)}")
    at_least("--rounds", args.rounds)
    out = output_folder(args.out)
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task(f"timing {len(specs)} optimizers on {args.model}", total=args.rounds)
        results = measure_speed(specs, args.model, args.rounds, on_round=lambda r: progress.advance(bar))
    table = Table()
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
    # title and legend as lines of their own: a table wraps them to its width, splitting words
    console.print(f"optimizer step on {args.model}, {args.rounds} interleaved rounds", style="bold")
    console.print(table)
    console.print(
        "x fused / x foreach: median step time over torch AdamW's; B/param: state bytes per parameter; "
        "x state: state bytes over AdamW's"
    )
    native = _native.build_seconds()
    if native is not None:
        built = "unavailable" if _native.library() is None else "ready"
        console.print(f"native kernels {built} after {native:.2f} s (a build, or a load from the cache), in 1st ms")
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


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``thrifty speed``."""
    p = subparsers.add_parser("speed", help="time optimizer steps and count state bytes against torch's AdamW")
    p.add_argument(
        "specs",
        nargs="*",
        metavar="NAME[:VARIANT]",
        help="optimizers, e.g. soap sgd_sai:single adamw:fused (variants: fused, foreach, single, reference, where "
        "the optimizer has that path)",
    )
    p.add_argument(
        "--model",
        default="mlp8m",
        help="mlp8m (8.4M parameters, default), mlp1m, mlp50k, or charlm (the char-LM workload)",
    )
    p.add_argument("--rounds", type=int, default=20, help="interleaved timing rounds (default 20)")
    p.add_argument("--out", default="runs/speed", help="output folder for speed.json (default: runs/speed)")
    p.set_defaults(func=_cmd_speed)
