"""``thrifty list``: the catalogue of papers, or the registered claims, as a table, JSON or Markdown."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table

from thrifty.cli.errors import UsageError

__all__ = ["claims_markdown", "markdown_table", "register"]

_STATUS_STYLE = {"implemented": "green", "partial": "yellow", "planned": "dim"}


def claims_markdown(claims: Iterable[Any]) -> str:
    """The registered claims as a Markdown table (the README's claims table is this output)."""
    lines = ["| claim | in default suite | what is measured | held when |", "|---|---|---|---|"]
    for c in claims:
        lines.append(f"| `{c.key}` | {'yes' if c.default else ''} | {c.measures} | {c.threshold} |")
    return "\n".join(lines)


def markdown_table(papers: Iterable[Any]) -> str:
    """The catalogue as a Markdown table (the README's table is this output)."""
    lines = ["| field | key | status | checked against | arXiv | paper |", "|---|---|---|---|---|---|"]
    for p in papers:
        status = p.status + (f" ({p.note})" if p.status == "partial" and p.note else "")
        reference = p.reference + (f" ({p.reference_note})" if p.reference_note else "")
        lines.append(f"| {p.field} | `{p.key}` | {status} | {reference} | {p.arxiv or '?'} | {p.title} |")
    return "\n".join(lines)


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
    for column in ("field", "key", "status", "checked against", "arXiv", "title", "import"):
        table.add_column(column, overflow="fold")
    for p in papers:
        status = f"[{_STATUS_STYLE[p.status]}]{p.status}"
        table.add_row(p.field, p.key, status, p.reference, p.arxiv or "?", p.title, p.import_path)
    console.print(table)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``thrifty list``."""
    from thrifty.catalog import PAPERS

    p = subparsers.add_parser("list", help=f"print the catalogue of the {len(PAPERS)} papers and their status")
    p.add_argument("--field", help="only papers of this field (optim, serve, diffusion, ...)")
    p.add_argument("--status", help="only papers with this status (implemented, partial, planned)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument("--claims", action="store_true", help="list the registered claims instead of the papers")
    p.set_defaults(func=_cmd_list)
