"""``thrifty bench``: run claims and write ``results.json`` and ``report.md`` with plots."""

from __future__ import annotations

import argparse

from rich.console import Console

from thrifty.cli.errors import UsageError, at_least, output_folder

__all__ = ["register"]


def _select_claims(args: argparse.Namespace) -> list:
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
    at_least("--seeds", args.seeds)
    out = output_folder(args.out)
    run = run_claims(claims, scale=args.scale, seeds=args.seeds, out_dir=str(out))
    results, report = write_all(run, str(out))
    console.print(summary_table(run))
    console.print(f"wrote {results} and {report}")
    return 1 if run.failed else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``thrifty bench``."""
    p = subparsers.add_parser("bench", help="run claims and write results.json and report.md")
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
