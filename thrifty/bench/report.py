"""Write a bench run as ``results.json`` and ``report.md`` with PNG plots, and print its summary."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.markup import escape
from rich.table import Table

from thrifty.bench.claim import Series
from thrifty.bench.runner import BenchRun, ClaimResult

__all__ = ["plot_series", "summary_rows", "summary_table", "write_all", "write_report", "write_results"]

_VERDICT_STYLE = {"held": "green", "not held": "red", "inconclusive": "yellow", "error": "bold red"}


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return _json_safe(obj.item())
    return obj


def write_results(run: BenchRun, out_dir: str | Path) -> Path:
    """``results.json``: every claim's metrics, per-seed values, verdict and the environment."""
    path = Path(out_dir) / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_json_safe(run.to_dict()), indent=1) + "\n")
    return path


def summary_rows(run: BenchRun) -> list[tuple[str, str, str, str]]:
    """(claim, verdict, measured, seconds) for each claim."""
    rows = []
    for r in run.results:
        measured = r.outcome.summary if r.outcome else (r.error or "").splitlines()[0]
        rows.append((r.claim.key, r.verdict, measured, f"{r.seconds:.0f}"))
    return rows


def summary_table(run: BenchRun) -> Table:
    """The summary as a rich table for the terminal."""
    table = Table(title=f"thrifty bench: {run.scale} scale, seeds {run.seeds}, {run.seconds:.0f} s")
    for name in ("claim", "verdict", "measured", "s"):
        table.add_column(name, overflow="fold")
    for key, verdict, measured, seconds in summary_rows(run):
        # Summaries hold brackets ("[simulated, A100]", the comparisons' intervals): escape them, or rich would
        # read them as style markup and drop them.
        table.add_row(key, f"[{_VERDICT_STYLE.get(verdict, '')}]{verdict}", escape(measured), seconds)
    return table


def _band(xs: Sequence[Sequence[float]], ys: Sequence[Sequence[float]]):
    """Mean and min/max of per-seed curves on a common x grid (interpolated where x differs)."""
    xs = [np.asarray(x, dtype=float) for x in xs]
    ys = [np.asarray(y, dtype=float) for y in ys]
    if all(len(x) == len(xs[0]) and np.allclose(x, xs[0]) for x in xs):
        grid = xs[0]
        stack = np.stack(ys)
    else:
        end = min(x[-1] for x in xs)
        grid = np.linspace(max(x[0] for x in xs), end, 200)
        stack = np.stack([np.interp(grid, x, y) for x, y in zip(xs, ys, strict=True)])
    return grid, stack.mean(0), stack.min(0), stack.max(0)


def plot_series(series: Sequence[Series], title: str, path: str | Path) -> Path | None:
    """One row per metric; left against steps, right against training CPU seconds; bands span seeds."""
    from thrifty._plotting import pyplot

    plt = pyplot()

    series = [s for s in series if s.values and all(len(v) > 1 for v in s.values)]
    if not series:
        return None
    metrics = list(dict.fromkeys(s.metric for s in series))
    fig, axes = plt.subplots(len(metrics), 2, figsize=(11, 3.6 * len(metrics)), squeeze=False)
    for row, metric in enumerate(metrics):
        for col, (xkey, xlabel) in enumerate((("steps", "step"), ("seconds", "training CPU seconds (process time)"))):
            ax = axes[row][col]
            for s in series:
                if s.metric != metric:
                    continue
                grid, mean, lo, hi = _band(getattr(s, xkey), s.values)
                (line,) = ax.plot(grid, mean, label=f"{s.label} (n={len(s.values)})")
                if len(s.values) > 1:
                    ax.fill_between(grid, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _flatten(details: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for key, value in details.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += _flatten(value, f"{name}: ")
        else:
            rows.append((name, value))
    return rows


def _details(details: dict, out_dir: Path) -> list[str]:
    """Details as a table (nested dicts flattened to one row per entry), then every figure a claim saved under
    ``out_dir`` embedded below it."""
    rows, figures = [], []
    for name, value in _flatten(details):
        if isinstance(value, str) and value.endswith(".png") and (out_dir / Path(value).name).is_file():
            figures.append((name, Path(value).name))
            continue
        if isinstance(value, (list, tuple)):
            value = ", ".join(_fmt(v) for v in value)
        text = _fmt(value).replace("|", "\\|").replace("\n", " ")
        rows.append(f"| {name} | {text} |")
    lines = ["| detail | value |", "|---|---|", *rows, ""] if rows else []
    for name, file in figures:
        lines += [f"![{name}]({file})", ""]
    return lines


def _comparison_table(comparisons, title: str) -> list[str]:
    if not comparisons:
        return []
    lines = [
        f"{title}:",
        "",
        "| comparison | method | baseline | effect | interval | n | rule | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        pct = (lambda x: f"{x:+.2%}" if math.isfinite(x) else str(x)) if c.relative else _fmt
        verdict = c.verdict + (f" ({c.reason})" if c.reason else "")
        lines.append(
            f"| {c.name} | {_fmt(c.method_mean)} | {_fmt(c.baseline_mean)} | {pct(c.effect)} | "
            f"[{pct(c.low)}, {pct(c.high)}] ({c.interval}) | {c.n} | {c.rule} | {verdict} |"
        )
    return lines + [""]


def _claim_section(r: ClaimResult, out_dir: Path) -> list[str]:
    c = r.claim
    lines = [
        f"## {c.key}: {r.verdict}",
        "",
        f"- Paper: {c.paper} (field `{c.field}`)",
        f"- Statement: > {c.statement}",
        f"- Measured: {c.measures}",
        f"- Threshold (fixed before the run): {c.threshold}",
        f"- Time: {r.seconds:.1f} s",
        "",
    ]
    if r.outcome is None:
        lines += ["The claim crashed:", "", "```", (r.error or "").strip(), "```", ""]
        return lines
    o = r.outcome
    lines += [f"**Result:** {o.summary}", ""]
    lines += _comparison_table(
        o.comparisons,
        "Judged comparisons (all must hold)" if o.require == "all" else "Judged comparisons (one must hold)",
    )
    lines += _comparison_table(o.reported, "Reported, not judged")
    for t in o.tuning:
        lines += [
            f"Tuned on seeds {t['tuning_seeds']} (never judged): {t['label']}, mean final {t['metric']} "
            f"({'higher' if t['higher_is_better'] else 'lower'} is better), chosen {_fmt(t['chosen'])}",
            "",
            "| value | " + t["metric"] + " |",
            "|---|---|",
        ]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in t["grid"].items()]
        lines.append("")
    if o.metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in o.metrics.items()]
        lines.append("")
    if o.per_seed:
        lines += ["| per seed | values |", "|---|---|"]
        lines += [f"| {k} | {', '.join(_fmt(x) for x in v)} |" for k, v in o.per_seed.items()]
        lines.append("")
    if o.details:
        lines += _details(o.details, out_dir)
    if o.failures:
        lines += ["Runs that stopped:", ""] + [f"- {f}" for f in o.failures] + [""]
    plot = plot_series(o.series, f"{c.key}: {r.verdict}", out_dir / f"{c.key}.png")
    if plot is not None:
        lines += [f"![{c.key} curves]({plot.name})", ""]
    return lines


def write_report(run: BenchRun, out_dir: str | Path) -> Path:
    """``report.md``: the summary table, then each claim's statement, figures and plots."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = run.env
    lines = [
        "# thrifty bench report",
        "",
        f"Scale `{run.scale}`, seeds {run.seeds}, {run.seconds:.0f} s in all. Measured on "
        f"{env['cpu_model']} ({env['torch_threads']} torch threads{', ' + env['cuda'] if env['cuda'] else ''}), "
        f"torch {env['torch']}, Python {env['python']}, thrifty {env['thrifty']} "
        f"at commit {env['git_commit'] or 'unknown'}, {env['date']}.",
        "",
        "| claim | verdict | measured | seconds |",
        "|---|---|---|---|",
    ]
    lines += [f"| {k} | {v} | {m} | {s} |" for k, v, m, s in summary_rows(run)]
    lines.append("")
    for r in run.results:
        lines += _claim_section(r, out_dir)
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_all(run: BenchRun, out_dir: str | Path) -> tuple[Path, Path]:
    return write_results(run, out_dir), write_report(run, out_dir)
