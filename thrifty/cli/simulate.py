"""``thrifty simulate``: run serving policies on a trace through the GPU cost-model simulator.

Every number it prints or writes is simulated, labelled ``simulated, <GPU> cost model``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from thrifty.cli.errors import UsageError, at_least, output_folder

__all__ = ["register"]


def _fmt(value: float, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value != value else f"{value * scale:.{digits}f}"  # NaN -> "-"


def _check(args: argparse.Namespace):
    """Validate the command line; returns (cost model, trace). Raises ``UsageError``."""
    from thrifty.serve.sched import SCHEDULERS
    from thrifty.serve.sim.cost_model import CostModel
    from thrifty.serve.sim.hardware import UnknownGPUError
    from thrifty.serve.sim.model_specs import UnknownModelError
    from thrifty.serve.sim.workloads import load_trace

    for policy in args.policy:
        if policy not in SCHEDULERS:
            raise UsageError(f"unknown policy {policy!r}; choose from {', '.join(sorted(SCHEDULERS))}")
    if args.arrival == "trace":
        if args.qps is not None or args.capacity:
            raise UsageError("--arrival trace replays the trace's own arrival times: drop --qps and --capacity")
    elif (args.qps is None) == (not args.capacity):
        raise UsageError("give either --qps X or --capacity")
    if not args.cv > 0:
        raise UsageError(f"--cv must be > 0, got {args.cv}")
    if args.qps is not None and not args.qps > 0:
        raise UsageError(f"--qps must be > 0, got {args.qps}")
    if args.slo_tbt is not None and not args.slo_tbt > 0:
        raise UsageError(f"--slo-tbt must be > 0, got {args.slo_tbt}")
    if not (args.goodput_ttft > 0 and args.goodput_tpot > 0):
        raise UsageError("--goodput-ttft and --goodput-tpot must be > 0")
    for flag in ("--requests", "--budget", "--max-num-seqs", "--max-seq-len"):
        at_least(flag, getattr(args, flag[2:].replace("-", "_")))
    output_folder(args.out)
    try:
        cost = CostModel(args.model, args.gpu)
    except (UnknownGPUError, UnknownModelError) as exc:
        raise UsageError(str(exc)) from None
    try:
        trace = load_trace(args.trace)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    return cost, trace


def _cmd_simulate(args: argparse.Namespace, console: Console) -> int:
    from thrifty.serve.sim.capacity import SimulatedLoad, capacity_search, strict_tbt_slo
    from thrifty.serve.sim.simulator import SLO, Simulator, default_config, plot_tbt_cdfs
    from thrifty.serve.sim.workloads import trace_requests

    args.policy = args.policy or ["sarathi_serve"]
    cost, trace = _check(args)
    max_seq_len = min(cost.model.max_position, args.max_seq_len)
    label = cost.label
    if args.arrival == "trace" and trace.arrivals is None:
        raise UsageError(f"trace {trace.name!r} has no arrival times (arrived_at column); use --qps")
    try:
        specs = trace_requests(
            trace,
            args.requests,
            1.0 if args.capacity else args.qps,
            seed=args.seed,
            max_seq_len=max_seq_len,
            arrival=args.arrival,
            cv=args.cv,
            vocab=cost.model.vocab,
        )
        sims = {
            p: Simulator(
                cost,
                p,
                default_config(p, args.budget, args.max_num_seqs, max_seq_len),
                enable_prefix_caching=args.prefix_caching,
                slo=SLO(args.goodput_ttft, args.goodput_tpot),
            )
            for p in args.policy
        }
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    out = output_folder(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "label": label,
        "model": cost.model.name,
        "gpu": cost.gpu.name,
        "trace": trace.name,
        "requests": len(specs),
        "token_budget": args.budget,
        "max_num_seqs": args.max_num_seqs,
        "max_seq_len": max_seq_len,
        "seed": args.seed,
        "policies": {},
    }
    tbts = {}
    if args.capacity:
        slo = args.slo_tbt if args.slo_tbt is not None else strict_tbt_slo(cost)
        record["tbt_slo_s"] = slo
        title = f"capacity ({label}): {cost.model.name}, {trace.name} trace, {len(specs)} requests"
        table = Table()
        for column in ("policy", "capacity QPS", "P99 TBT ms", "P50 sched delay s", "probes"):
            table.add_column(column, justify="right")
        with console.status("capacity search (simulated)"):
            for policy, sim in sims.items():
                load = SimulatedLoad(sim, specs)
                result = capacity_search(load, slo, start_qps=args.start_qps)
                at = load.results.get(result.capacity_qps)
                record["policies"][policy] = {**result.to_dict(), "at_capacity": at.summary() if at else None}
                if at is not None:
                    tbts[policy] = at.tbt
                probe = next((p for p in result.probes if p.qps == result.capacity_qps), None)
                table.add_row(
                    policy,
                    _fmt(result.capacity_qps, digits=2),
                    _fmt(probe.tbt_p99 if probe else float("nan"), 1e3),
                    _fmt(probe.delay_p50 if probe else float("nan"), digits=3),
                    str(len(result.probes)),
                )
        note = f"{label}; SLO: P99 TBT <= {slo * 1e3:.0f} ms and P50 scheduling delay <= 2 s"
    else:
        rate = "the trace's arrival times" if args.arrival == "trace" else f"{args.qps} QPS ({args.arrival})"
        title = f"{label}: {cost.model.name}, {trace.name} trace, {len(specs)} requests at {rate}"
        table = Table()
        columns = ("TTFT p50 ms", "TTFT p99 ms", "TBT p50 ms", "TBT p99 ms", "delay p50 s", "req/s", "tok/s")
        table.add_column("policy", no_wrap=True)
        for column in (*columns, "goodput", "preempt", "prefix hit"):
            table.add_column(column, justify="right")
        with console.status("simulating"):
            for policy, sim in sims.items():
                r = sim.run(specs)
                s = r.summary()
                record["policies"][policy] = s
                tbts[policy] = r.tbt
                table.add_row(
                    policy,
                    _fmt(s["ttft_p50_s"], 1e3),
                    _fmt(s["ttft_p99_s"], 1e3),
                    _fmt(s["tbt_p50_s"], 1e3),
                    _fmt(s["tbt_p99_s"], 1e3),
                    _fmt(s["scheduling_delay_p50_s"], digits=3),
                    _fmt(s["request_throughput"], digits=2),
                    _fmt(s["total_token_throughput"], digits=0),
                    _fmt(s["goodput"], digits=2),
                    str(s["preemptions"]),
                    f"{s['prefix_hit_rate']:.1%}",
                )
        note = f"every number: {label}; goodput SLO TTFT <= {args.goodput_ttft:g} s, TPOT <= {args.goodput_tpot:g} s"
    # title and note as lines of their own: a table wraps them to its width, splitting words in a narrow table
    console.print(title, style="bold", markup=False)
    console.print(table)
    console.print(note, markup=False)
    (out / "simulate.json").write_text(json.dumps(record, indent=1, default=float) + "\n")
    written = [out / "simulate.json"]
    plot = plot_tbt_cdfs(tbts, f"TBT CDF ({label})", out / "tbt_cdf.png")
    if plot is not None:
        written.append(plot)
    console.print("wrote " + " and ".join(str(p) for p in written))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``thrifty simulate``."""
    p = subparsers.add_parser(
        "simulate", help="simulate serving policies on a request trace with a GPU cost model (numbers are simulated)"
    )
    p.add_argument("--trace", default="conv", help="conv, code, arxiv (shipped with thrifty) or a CSV path")
    p.add_argument(
        "--policy",
        action="append",
        default=None,
        help="scheduler (prefill_first, orca, sarathi, sarathi_serve, batchllm); repeat to compare "
        "(default sarathi_serve)",
    )
    p.add_argument("--gpu", default="a100", help="a100, h100 or a6000 (default a100)")
    p.add_argument("--model", default="mistral-7b", help="mistral-7b (default), llama2-7b, llama3-8b, llama-13b, ...")
    p.add_argument("--qps", type=float, default=None, help="request rate of Poisson arrivals")
    p.add_argument("--capacity", action="store_true", help="binary-search the highest QPS within the SLOs instead")
    p.add_argument(
        "--slo-tbt",
        type=float,
        default=None,
        help="capacity's P99 TBT SLO in seconds (default: the strict SLO, 5x the decode step at batch 32 and 4k "
        "context; Sarathi-Serve's relaxed SLO is 25x)",
    )
    p.add_argument("--goodput-ttft", type=float, default=2.0, help="goodput's TTFT SLO in seconds (default 2)")
    p.add_argument("--goodput-tpot", type=float, default=0.2, help="goodput's TPOT SLO in seconds (default 0.2)")
    p.add_argument("--start-qps", type=float, default=1.0, help="capacity search starts below 2x this (default 1)")
    p.add_argument("--requests", type=int, default=512, help="requests drawn from the trace (default 512)")
    p.add_argument("--budget", type=int, default=512, help="token budget of chunking policies (default 512)")
    p.add_argument("--max-num-seqs", type=int, default=128, help="batch size cap (default 128)")
    p.add_argument("--max-seq-len", type=int, default=8192, help="drop longer requests (default 8192)")
    p.add_argument(
        "--arrival",
        default="poisson",
        choices=("poisson", "gamma", "trace"),
        help="arrival process at --qps (poisson, gamma with --cv), or trace: replay the trace's own times (no --qps)",
    )
    p.add_argument("--cv", type=float, default=1.0, help="coefficient of variation of gamma arrivals (default 1)")
    p.add_argument("--prefix-caching", action="store_true", help="enable LRU prefix caching in the block manager")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/simulate", help="output folder for simulate.json and tbt_cdf.png")
    p.set_defaults(func=_cmd_simulate)
