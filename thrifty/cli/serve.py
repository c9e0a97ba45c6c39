"""``thrifty serve``: an OpenAI-compatible HTTP server (:mod:`thrifty.serve.server`) over an ``LLMEngine``."""

from __future__ import annotations

import argparse
import socket

from rich.console import Console

from thrifty.cli.errors import UsageError, at_least

__all__ = ["register"]


def _check_port(host: str, port: int) -> None:
    """Bind ``host:port`` once, as uvicorn will, so that an address in use is one line before the model loads."""
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must lie in 0..65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"--host {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a port in TIME_WAIT is free
        try:
            sock.bind(address)
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror} (pick another --port)") from None


def _cmd_serve(args: argparse.Namespace, console: Console) -> int:
    import torch

    from thrifty.serve.builder import build_engine, served_model_name
    from thrifty.serve.server import run_server

    for flag in ("--budget", "--max-num-seqs", "--num-blocks", "--threads"):
        at_least(flag, getattr(args, flag[2:].replace("-", "_")))
    _check_port(args.host, args.port)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        engine = build_engine(
            args.model,
            args.scheduler,
            budget=args.budget,
            max_num_seqs=args.max_num_seqs,
            num_blocks=args.num_blocks,
            enable_prefix_caching=not args.no_prefix_caching,
        )
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    name = args.served_model_name or served_model_name(args.model)
    bm = engine.scheduler.block_manager
    console.print(
        f"serving [bold]{name}[/] ({engine.config.max_position_embeddings}-token context, scheduler "
        f"{engine.scheduler.name}, {bm.num_blocks} KV blocks of {bm.block_size}) on http://{args.host}:{args.port}/v1"
    )
    run_server(engine, name, args.host, args.port, log_level=args.log_level)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``thrifty serve``."""
    s = subparsers.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API (/v1/completions)")
    s.add_argument("--model", default=None, help="local Hugging Face Llama checkpoint directory (default: embedded)")
    s.add_argument("--served-model-name", default=None, help="the model id clients send (default: directory name)")
    s.add_argument("--scheduler", default="sarathi_serve", help="policy (default sarathi_serve)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    s.add_argument("--budget", type=int, default=512, help="token budget per step of chunking policies (default 512)")
    s.add_argument("--max-num-seqs", type=int, default=128, help="most requests running at once (default 128)")
    s.add_argument("--num-blocks", type=int, default=None, help="KV blocks of 16 tokens (default: 256 MiB of KV)")
    s.add_argument("--no-prefix-caching", action="store_true", help="disable reuse of cached prompt blocks")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    s.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    s.set_defaults(func=_cmd_serve)
