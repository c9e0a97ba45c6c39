"""Workloads for the simulator: request-length traces, arrival processes, and shared-prefix offline batches.

- Traces (Vidur's processed traces, MIT; shipped in ``data/llm-traces``): ``conv`` and ``code`` are the Azure LLM
  inference traces 2023 (Splitwise) with arrival times, ``arxiv`` the arXiv-summarization lengths. A trace is used
  as Sarathi-Serve's capacity search uses one: request lengths from the trace, arrivals from a Poisson (or gamma)
  process at the probed rate; requests longer than the model's context are dropped.
- Arrivals: Poisson (exponential gaps of mean ``1 / qps``) or gamma gaps with coefficient of variation ``cv``
  (shape ``1 / cv^2``, mean ``1 / qps``; ``cv = 1`` is Poisson), as Vidur's interval generators.
- ``shared_prefix_batch``: BatchLLM's microbenchmark shape (arXiv 2412.03594): ``num_prefixes`` distinct prefixes,
  each shared by ``suffixes_per_prefix`` requests with their own suffix, shuffled, all arriving at time 0.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from thrifty.serve.sim.cost_model import DEFAULT_DATA_DIR

__all__ = [
    "TRACES",
    "RequestSpec",
    "Trace",
    "gamma_arrivals",
    "load_trace",
    "poisson_arrivals",
    "shared_prefix_batch",
    "token_saving_ratio",
    "trace_requests",
]

TRACES = {
    "conv": "splitwise_conv.csv",
    "code": "splitwise_code.csv",
    "arxiv": "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv",
}


@dataclass(frozen=True)
class RequestSpec:
    """What the simulator turns into a ``Request``: prompt token ids, output length and arrival time."""

    prompt_token_ids: tuple[int, ...]
    max_tokens: int
    arrival_time: float = 0.0


@dataclass(frozen=True)
class Trace:
    """Prompt and output lengths of a trace, with its arrival times when it has them."""

    name: str
    prompt_lens: np.ndarray
    output_lens: np.ndarray
    arrivals: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.prompt_lens.size)


def _column(path: Path, rows: list[dict[str, str]], column: str) -> list[float]:
    """The numbers of ``column``; a ``ValueError`` naming the file, line and value that is not one."""
    values = []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        try:
            values.append(float(row[column]))
        except (TypeError, ValueError):
            raise ValueError(f"{str(path)!r} line {line}: {column} is {row[column]!r}, not a number") from None
    return values


def load_trace(name_or_path: str | Path, data_dir: str | Path | None = None) -> Trace:
    """A trace by name (``conv``, ``code``, ``arxiv``) or CSV path with ``num_prefill_tokens``,
    ``num_decode_tokens`` and optionally ``arrived_at`` columns."""
    name = str(name_or_path)
    if name in TRACES:
        path = Path(data_dir if data_dir is not None else DEFAULT_DATA_DIR) / "llm-traces" / TRACES[name]
    else:
        path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"trace file {str(path)!r} not found (known traces: {', '.join(TRACES)}, or a CSV path)"
        )
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "num_prefill_tokens" not in rows[0] or "num_decode_tokens" not in rows[0]:
        raise ValueError(f"{str(path)!r} needs num_prefill_tokens and num_decode_tokens columns")
    prompts = np.array([int(v) for v in _column(path, rows, "num_prefill_tokens")])
    outputs = np.array([int(v) for v in _column(path, rows, "num_decode_tokens")])
    arrivals = np.array(_column(path, rows, "arrived_at")) if "arrived_at" in rows[0] else None
    return Trace(name if name in TRACES else path.stem, prompts, outputs, arrivals)


def poisson_arrivals(qps: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` arrival times of a Poisson process of rate ``qps`` (the first at its first gap)."""
    if qps <= 0:
        raise ValueError(f"qps must be > 0, got {qps}")
    return np.cumsum(rng.exponential(1.0 / qps, size=n))


def gamma_arrivals(qps: float, n: int, rng: np.random.Generator, cv: float = 1.0) -> np.ndarray:
    """``n`` arrival times with gamma gaps of mean ``1 / qps`` and coefficient of variation ``cv``."""
    if qps <= 0 or cv <= 0:
        raise ValueError(f"qps and cv must be > 0, got qps={qps}, cv={cv}")
    shape = 1.0 / cv**2
    return np.cumsum(rng.gamma(shape, 1.0 / (qps * shape), size=n))


def _tokens(rng: np.random.Generator, n: int, vocab: int) -> tuple[int, ...]:
    return tuple(rng.integers(1, vocab, size=n).tolist())


def trace_requests(
    trace: Trace,
    num_requests: int,
    qps: float | None,
    seed: int = 0,
    max_seq_len: int | None = None,
    arrival: str = "poisson",
    cv: float = 1.0,
    vocab: int = 32000,
) -> list[RequestSpec]:
    """``num_requests`` requests with lengths drawn (without replacement, seeded) from ``trace``.

    ``qps`` sets Poisson (``arrival="poisson"``) or gamma arrivals; ``arrival="trace"`` replays the trace's own
    arrival times from its first sampled request (``qps`` ignored); ``qps=None`` puts every request at time 0.
    The same seed gives the same lengths and prompts at every rate (common random numbers for capacity search).
    """
    keep = np.flatnonzero(trace.prompt_lens + trace.output_lens <= (max_seq_len or np.inf))
    keep = keep[(trace.prompt_lens[keep] > 0) & (trace.output_lens[keep] > 0)]
    if num_requests < 1 or keep.size == 0:
        raise ValueError(f"need num_requests >= 1 and a non-empty trace, got {num_requests} and {keep.size} rows")
    rng = np.random.default_rng(seed)
    if arrival == "trace":
        if trace.arrivals is None:
            raise ValueError(f"trace {trace.name!r} has no arrival times")
        start = int(rng.integers(0, max(1, keep.size - num_requests + 1)))
        idx = keep[start : start + num_requests]
        times = trace.arrivals[idx] - trace.arrivals[idx[0]]
    else:
        idx = rng.choice(keep, size=min(num_requests, keep.size), replace=False)
        arrival_rng = np.random.default_rng([seed, 1])
        if qps is None:
            times = np.zeros(idx.size)
        elif arrival == "poisson":
            times = poisson_arrivals(qps, idx.size, arrival_rng)
        elif arrival == "gamma":
            times = gamma_arrivals(qps, idx.size, arrival_rng, cv)
        else:
            raise ValueError(f"arrival must be poisson, gamma or trace, got {arrival!r}")
    return [
        RequestSpec(_tokens(rng, int(trace.prompt_lens[i]), vocab), int(trace.output_lens[i]), float(t))
        for i, t in zip(idx, times, strict=True)
    ]


def shared_prefix_batch(
    num_prefixes: int = 64,
    prefix_len: int = 1000,
    suffixes_per_prefix: int = 8,
    suffix_len: tuple[int, int] = (100, 300),
    output_len: tuple[int, int] = (50, 150),
    seed: int = 0,
    vocab: int = 32000,
) -> list[RequestSpec]:
    """An offline batch: ``num_prefixes`` x ``suffixes_per_prefix`` requests, shuffled, all at time 0.

    Suffix and output lengths are uniform on the inclusive ranges given.
    """
    rng = np.random.default_rng(seed)
    specs = []
    for _ in range(num_prefixes):
        prefix = _tokens(rng, prefix_len, vocab)
        for _ in range(suffixes_per_prefix):
            suffix = _tokens(rng, int(rng.integers(suffix_len[0], suffix_len[1] + 1)), vocab)
            specs.append(RequestSpec(prefix + suffix, int(rng.integers(output_len[0], output_len[1] + 1))))
    order = rng.permutation(len(specs))
    return [specs[i] for i in order]


def token_saving_ratio(specs: list[RequestSpec], block_size: int = 1) -> float:
    """Theoretical fraction of prompt tokens that prefix sharing can skip: 1 - (distinct prefix-tree tokens) /
    (all prompt tokens), counting sharing in whole blocks of ``block_size`` tokens."""
    seen: set[int] = set()
    total = distinct = 0
    for spec in specs:
        tokens = spec.prompt_token_ids
        total += len(tokens)
        key = 0
        for start in range(0, len(tokens) - block_size + 1, block_size):
            key = hash((key, tokens[start : start + block_size]))  # chained, as the block manager's hashes
            if key not in seen:
                seen.add(key)
                distinct += block_size
        distinct += len(tokens) % block_size
    return 1.0 - distinct / total
