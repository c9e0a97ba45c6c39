"""Sequential gradient coding: the codes, the schemes' task assignment, wait rules and decoders.

Krishnan, Ebrahimi and Khisti, "Sequential Gradient Coding For Straggler Mitigation" (arXiv 2211.13802); the
bookkeeping follows the official simulator (``mamaj/Sequential-Gradient-Coding-2``, ``gradient_coding.py``,
``selective_repeat_sgc.py``, ``multiplexed_sgc.py``).

Jobs ``g(1), g(2), ...`` (gradients) arrive one per round; job ``t`` starts in round ``t`` and must be decoded at the
end of round ``t + T``. ``n`` workers; a straggler's work of the round is lost.

* **GC** (Tandon et al., arXiv 1612.03301; ``T = 0``): the job's data splits into ``n`` parts; worker ``i`` computes
  parts ``i, ..., i + s (mod n)`` and sends ``c_i = sum_j B_ij g_j`` (cyclic repetition code ``B``). From any
  ``n - s`` responders ``F`` the master solves ``a B_F = 1`` and gets ``sum_j g_j = a c_F``. Load ``(s + 1) / n``.
* **SR-SGC** (selective repetition, ``T = B``): GC with ``s = ceil(B lambda / (W - 1 + B))``; in round ``t + B`` the
  ``v`` workers whose job-``t`` result was lost redo it when ``v > s`` (the first ``v - s`` by index), instead of their
  job-``t + B`` task. Job ``t`` decodes from ``n - s`` distinct rows received in rounds ``t`` and ``t + B``.
* **M-SGC** (multiplexed, the main scheme, ``T = W - 2 + B``): each job's data splits into a D1 part, ``W - 1``
  uncoded pieces per worker, and a D2 part of ``B`` groups each protected by GC with ``s = lambda``; piece sizes make
  every mini-task the same cost (a D1 piece is ``(lambda + 1) / n`` of a D2 group). Each round every worker runs
  ``W - 1 + B`` mini-tasks, slot ``m`` for job ``r - m``: slots ``m < W - 1`` compute the worker's next missing D1
  piece; slot ``W - 1 + g`` computes the worker's coded row of D2 group ``g`` if all its D1 pieces of that job have
  arrived, else its next missing D1 piece (the adaptive multiplexing). Job ``t`` decodes when every worker's D1
  pieces arrived and each D2 group has ``n - lambda`` coded rows. Load
  ``(lambda + 1)(W - 1 + B) / (n (B + (W - 1)(lambda + 1)))``.

Straggler models: GC tolerates at most ``s`` stragglers per round; SR-SGC and M-SGC the ``(B, W, lambda)``-bursty
model: within any ``W`` consecutive rounds at most ``lambda`` distinct workers straggle, and a worker straggling in
round ``r`` did not straggle in rounds ``r - W + 1 .. r - B`` (bursts of at most ``B``). A round whose stragglers the
scheme cannot tolerate is one where the master waits for every worker (``Coder.finish_round``). Deviation: the
official ``GradientCoding`` counts ``stragglers < s`` as decodable; here ``<= s`` (Tandon's guarantee), which only
favours the GC baseline.

A coder drives one run: each round ``assignment()`` gives every worker its mini-tasks, ``task_chunks`` says which
data chunks (``chunk_units``, laid out on a batch by ``chunk_slices``) with which coefficients make each task's
result, ``finish_round`` records who responded, and ``decode`` rebuilds the due job's gradient sum from the rows
received. ``thrifty.distributed.sgc.simulation`` runs coders against straggler traces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Coder",
    "CyclicGradientCoder",
    "SelectiveRepeatCoder",
    "SequentialGradientCoder",
    "Task",
    "chunk_slices",
    "cyclic_encoding_matrix",
    "cyclic_support",
    "decoding_vector",
    "make_coder",
]


# ------------------------------------------------------------------------------------------------- Tandon's cyclic GC
def _check_ns(n: int, s: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n (workers) must be a positive integer, got {n!r}")
    if not isinstance(s, int) or not 0 <= s < n:
        raise ValueError(f"stragglers s must satisfy 0 <= s < n = {n}, got s = {s!r}")


def cyclic_support(n: int, s: int) -> list[list[int]]:
    """Worker ``i`` computes parts ``i, i + 1, ..., i + s`` (mod ``n``)."""
    _check_ns(n, s)
    return [[(i + j) % n for j in range(s + 1)] for i in range(n)]


def cyclic_encoding_matrix(n: int, s: int, seed: int = 0) -> Tensor:
    """Tandon et al.'s cyclic repetition code ``B`` (``n x n``, float64, row ``i`` supported on ``cyclic_support``).

    Construction (their Algorithm 2): a random ``H`` (``s x n``) with ``H 1 = 0``; row ``i`` has ``B_ii = 1`` and the
    other ``s`` entries solve ``H b_i = 0``. The rows then lie in ``null(H)``, which contains ``1`` and has dimension
    ``n - s``, and any ``n - s`` of them span it (with probability one), so ``1`` is a combination of any ``n - s``.
    """
    support = cyclic_support(n, s)
    if s == 0:
        return torch.eye(n, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(s, n - 1, generator=gen, dtype=torch.float64)
    h = torch.cat([h, -h.sum(1, keepdim=True)], 1)
    b = torch.zeros(n, n, dtype=torch.float64)
    for i, cols in enumerate(support):
        b[i, i] = 1.0
        b[i, cols[1:]] = torch.linalg.solve(h[:, cols[1:]], -h[:, i])
    return b


def decoding_vector(b: Tensor, responders, s: int) -> Tensor:
    """``a`` (length ``n``, zero off ``responders``) with ``a B = 1``: the sum of the parts from the responders' rows.

    Raises ``ValueError`` when more than ``s`` workers are missing (the code cannot decode).
    """
    n = b.shape[0]
    rows = sorted({int(i) for i in responders})
    if any(not 0 <= i < n for i in rows):
        raise ValueError(f"responders must be worker indices in [0, {n}), got {sorted(responders)}")
    if n - len(rows) > s:
        raise ValueError(f"{n - len(rows)} stragglers but the code tolerates s = {s} (n = {n}); cannot decode")
    sub = b[rows]
    a_f = torch.linalg.lstsq(sub.T, torch.ones(n, dtype=b.dtype)).solution
    residual = (a_f @ sub - 1).abs().max().item()
    if residual > 1e-8:
        raise RuntimeError(f"decoding residual {residual:.2e}: the code matrix is ill-conditioned for {rows}")
    a = torch.zeros(n, dtype=b.dtype)
    a[rows] = a_f
    return a


# ------------------------------------------------------------------------------------------------------ the schemes
@dataclass(frozen=True)
class Task:
    """One mini-task: ``kind`` "gc" (a coded row of the job), "d1" (uncoded D1 piece ``index``) or "d2" (coded row
    of D2 group ``index``), for ``job``."""

    job: int
    kind: str
    index: int = 0


class Coder:
    """Shared bookkeeping: the straggler history, the received rows, the runtime rule."""

    n: int
    delay: int
    load: float
    slots: int

    def __init__(self, n: int) -> None:
        self.n = n
        self.reset()

    def reset(self, num_jobs: int | None = None) -> None:
        """Forget every round; jobs ``>= num_jobs`` are not started (their slots idle)."""
        self.num_jobs = num_jobs
        self.round = 0
        self.history: list[np.ndarray] = []

    def _job_exists(self, job: int) -> bool:
        return job >= 0 and (self.num_jobs is None or job < self.num_jobs)

    def decodable_job(self, r: int) -> int | None:
        """The job that must be decoded at the end of round ``r`` (``r - T``), if any."""
        job = r - self.delay
        return job if self._job_exists(job) else None

    def _bursty_ok(self, stragglers: np.ndarray, b: int, w: int, lambd: int) -> bool:
        r = self.round
        past = np.zeros(self.n, dtype=bool)
        for row in self.history[max(0, r - w + 1) : r]:
            past |= row
        if (past | stragglers).sum() > lambd:
            return False
        older = np.zeros(self.n, dtype=bool)
        for row in self.history[max(0, r - w + 1) : max(0, r - b + 1)]:
            older |= row
        return not (older & stragglers).any()

    def tolerates(self, stragglers) -> bool:
        raise NotImplementedError

    def finish_round(self, stragglers) -> np.ndarray:
        """Apply the runtime rule's outcome: record the round's stragglers (all workers respond if not tolerated).

        Returns the responder mask actually used.
        """
        mask = np.asarray(stragglers, dtype=bool).copy()
        if mask.shape != (self.n,):
            raise ValueError(f"straggler mask must have shape ({self.n},), got {mask.shape}")
        if not self.tolerates(mask):
            mask[:] = False
        self._commit(~mask)
        self.history.append(mask)
        self.round += 1
        return ~mask

    def check_pattern(self, stragglers) -> None:
        """Raise ``ValueError`` if the current round's straggler pattern is not tolerated (given the history)."""
        mask = np.asarray(stragglers, dtype=bool)
        if not self.tolerates(mask):
            raise ValueError(
                f"round {self.round}: stragglers {np.flatnonzero(mask).tolist()} are not tolerated by {self!r}"
            )

    def _commit(self, responders: np.ndarray) -> None:
        raise NotImplementedError


class CyclicGradientCoder(Coder):
    """Plain gradient coding (Tandon et al.): ``n`` workers, any ``s`` stragglers per round, no delay (``T = 0``)."""

    def __init__(self, n: int, s: int, seed: int = 0) -> None:
        _check_ns(n, s)
        self.s, self.seed = s, seed
        self.delay, self.slots, self.load = 0, 1, (s + 1) / n
        self.matrix = cyclic_encoding_matrix(n, s, seed)
        self.support = cyclic_support(n, s)
        super().__init__(n)

    def __repr__(self) -> str:
        return f"CyclicGradientCoder(n={self.n}, s={self.s})"

    def reset(self, num_jobs: int | None = None) -> None:
        super().reset(num_jobs)
        self.rows: dict[int, set[int]] = {}

    def tolerates(self, stragglers) -> bool:
        return int(np.asarray(stragglers, dtype=bool).sum()) <= self.s

    def assignment(self) -> list[list[Task]]:
        """Each worker's tasks in the current round."""
        job = self.round
        return [[Task(job, "gc")] if self._job_exists(job) else [] for _ in range(self.n)]

    def _commit(self, responders: np.ndarray) -> None:
        if self._job_exists(self.round):
            self.rows.setdefault(self.round, set()).update(np.flatnonzero(responders).tolist())

    def is_decodable(self, job: int) -> bool:
        return len(self.rows.get(job, ())) >= self.n - self.s

    def chunk_units(self) -> list[tuple[tuple, int]]:
        """The job's data chunks and their relative sizes: ``n`` equal parts."""
        return [(("part", j), 1) for j in range(self.n)]

    def task_chunks(self, worker: int, task: Task) -> list[tuple[tuple, float]]:
        """``(chunk, coefficient)`` pairs whose weighted gradient sum is ``worker``'s result for ``task``."""
        return [(("part", j), float(self.matrix[worker, j])) for j in self.support[worker]]

    def decode(self, job: int, results: dict[tuple[int, Task], Tensor]) -> Tensor:
        """The job's summed gradient from the received ``(worker, task) -> result`` rows."""
        rows = sorted(self.rows.get(job, ()))
        a = decoding_vector(self.matrix, rows, self.s)
        return sum(float(a[i]) * results[(i, Task(job, "gc"))] for i in rows)


class SelectiveRepeatCoder(CyclicGradientCoder):
    """SR-SGC: GC with ``s = ceil(B lambda / (W - 1 + B))`` plus selective repetition ``B`` rounds later (``T = B``).

    Tolerates the ``(B, W, lambda)``-bursty model; ``B`` must divide ``W - 1`` (as in the official code).
    """

    def __init__(self, n: int, b: int, w: int, lambd: int, seed: int = 0) -> None:
        _check_bwl(n, b, w, lambd)
        if (w - 1) % b:
            raise ValueError(f"SR-SGC needs B to divide W - 1, got B = {b}, W = {w}")
        s = math.ceil(b * lambd / (w - 1 + b))
        if s >= n:
            raise ValueError(f"SR-SGC with lambda = {lambd} needs s = {s} >= n = {n} stragglers per round")
        self.b, self.w, self.lambd = b, w, lambd
        super().__init__(n, s, seed)
        self.delay = b

    def __repr__(self) -> str:
        return f"SelectiveRepeatCoder(n={self.n}, B={self.b}, W={self.w}, lambda={self.lambd}; s={self.s})"

    def tolerates(self, stragglers) -> bool:
        return self._bursty_ok(np.asarray(stragglers, dtype=bool), self.b, self.w, self.lambd)

    def _repeaters(self) -> tuple[int | None, list[int]]:
        job = self.round - self.b
        if not self._job_exists(job):
            return None, []
        missing = sorted(set(range(self.n)) - self.rows.setdefault(job, set()))
        return job, missing[: max(0, len(missing) - self.s)]

    def assignment(self) -> list[list[Task]]:
        job = self.round
        out = [[Task(job, "gc")] if self._job_exists(job) else [] for _ in range(self.n)]
        old, repeaters = self._repeaters()
        for i in repeaters:
            out[i] = [Task(old, "gc")]
        return out

    def _commit(self, responders: np.ndarray) -> None:
        old, repeaters = self._repeaters()
        repeating = np.zeros(self.n, dtype=bool)
        repeating[repeaters] = True
        if old is not None:
            self.rows[old].update(np.flatnonzero(repeating & responders).tolist())
        if self._job_exists(self.round):
            self.rows.setdefault(self.round, set()).update(np.flatnonzero(~repeating & responders).tolist())


def _check_bwl(n: int, b: int, w: int, lambd: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n (workers) must be a positive integer, got {n!r}")
    if not (isinstance(b, int) and isinstance(w, int) and 1 <= b < w):
        raise ValueError(f"the bursty model needs integers 1 <= B < W, got B = {b!r}, W = {w!r}")
    if not isinstance(lambd, int) or not 0 <= lambd <= n:
        raise ValueError(f"lambda must satisfy 0 <= lambda <= n = {n}, got {lambd!r}")


class SequentialGradientCoder(Coder):
    """M-SGC, the multiplexed sequential gradient code: ``(B, W, lambda)``-bursty stragglers, delay ``W - 2 + B``.

    ``lambda = n`` means every worker may straggle: no D2 part (pure D1 repetition across rounds), as in the official
    load formula. See the module docstring for the rule.
    """

    def __init__(self, n: int, b: int, w: int, lambd: int, seed: int = 0) -> None:
        _check_bwl(n, b, w, lambd)
        self.b, self.w, self.lambd, self.seed = b, w, lambd, seed
        self.d1 = w - 1
        self.slots = w - 1 + b
        self.delay = w - 2 + b
        self.load = self.normalized_load(n, b, w, lambd)
        self.has_d2 = lambd < n
        if self.has_d2:
            self.matrix = cyclic_encoding_matrix(n, lambd, seed)
            self.support = cyclic_support(n, lambd)
        super().__init__(n)

    @staticmethod
    def normalized_load(n: int, b: int, w: int, lambd: int) -> float:
        """Data per worker per round, as a fraction of one job (official ``MultiplexedSGC.normalized_load``)."""
        if lambd == n:
            return (w - 1 + b) / (n * (w - 1))
        return (lambd + 1) * (w - 1 + b) / (n * (b + (w - 1) * (lambd + 1)))

    def __repr__(self) -> str:
        return f"SequentialGradientCoder(n={self.n}, B={self.b}, W={self.w}, lambda={self.lambd})"

    def reset(self, num_jobs: int | None = None) -> None:
        super().reset(num_jobs)
        self.d1_done: dict[int, np.ndarray] = {}  # job -> D1 pieces received per worker
        self.d2_rows: dict[int, np.ndarray] = {}  # job -> (B, n) received coded rows

    def tolerates(self, stragglers) -> bool:
        return self._bursty_ok(np.asarray(stragglers, dtype=bool), self.b, self.w, self.lambd)

    def _slot_plan(self) -> list[tuple[int, np.ndarray | None, int]]:
        """Per slot ``m``: ``(job, d2 mask over workers or None when the job does not exist, group)``."""
        plan = []
        for m in range(self.slots):
            job = self.round - m
            if not self._job_exists(job):
                plan.append((job, None, -1))
                continue
            done = self.d1_done.setdefault(job, np.zeros(self.n, dtype=np.int64))
            self.d2_rows.setdefault(job, np.zeros((self.b, self.n), dtype=bool))
            if m < self.d1:
                plan.append((job, np.zeros(self.n, dtype=bool), -1))
            else:
                plan.append((job, done >= self.d1, m - self.d1))
        return plan

    def assignment(self) -> list[list[Task]]:
        out: list[list[Task]] = [[] for _ in range(self.n)]
        for job, d2, group in self._slot_plan():
            if d2 is None:
                continue
            done = self.d1_done[job]
            for i in range(self.n):
                if not d2[i]:
                    out[i].append(Task(job, "d1", int(done[i])))
                elif self.has_d2:
                    out[i].append(Task(job, "d2", group))
        return out

    def _commit(self, responders: np.ndarray) -> None:
        for job, d2, group in self._slot_plan():
            if d2 is None:
                continue
            self.d1_done[job] += (~d2 & responders).astype(np.int64)
            if self.has_d2 and group >= 0:
                self.d2_rows[job][group] |= d2 & responders
        old = self.round - self.delay - 1
        self.d1_done.pop(old, None)
        self.d2_rows.pop(old, None)

    def is_decodable(self, job: int) -> bool:
        if job not in self.d1_done or (self.d1_done[job] < self.d1).any():
            return False
        return not self.has_d2 or bool((self.d2_rows[job].sum(1) >= self.n - self.lambd).all())

    def chunk_units(self) -> list[tuple[tuple, int]]:
        """D1 pieces ``(worker, piece)`` of ``lambda + 1`` units each, then D2 group parts of 1 unit each."""
        units = [(("d1", i, p), self.lambd + 1 if self.has_d2 else 1) for i in range(self.n) for p in range(self.d1)]
        if self.has_d2:
            units += [(("d2", g, j), 1) for g in range(self.b) for j in range(self.n)]
        return units

    def task_chunks(self, worker: int, task: Task) -> list[tuple[tuple, float]]:
        if task.kind == "d1":
            return [(("d1", worker, task.index), 1.0)]
        return [(("d2", task.index, j), float(self.matrix[worker, j])) for j in self.support[worker]]

    def decode(self, job: int, results: dict[tuple[int, Task], Tensor]) -> Tensor:
        if not self.is_decodable(job):
            raise ValueError(f"job {job} is not decodable from the rows received")
        total = sum(results[(i, Task(job, "d1", p))] for i in range(self.n) for p in range(self.d1))
        if self.has_d2:
            for g in range(self.b):
                rows = np.flatnonzero(self.d2_rows[job][g]).tolist()
                a = decoding_vector(self.matrix, rows, self.lambd)
                total = total + sum(float(a[i]) * results[(i, Task(job, "d2", g))] for i in rows)
        return total


def make_coder(scheme: str, n: int, params: tuple[int, ...], seed: int = 0) -> Coder:
    """``scheme`` "gc" with ``params = (s,)``, "srsgc" or "msgc" with ``params = (B, W, lambda)``."""
    if scheme == "gc":
        return CyclicGradientCoder(n, *params, seed=seed)
    if scheme == "srsgc":
        return SelectiveRepeatCoder(n, *params, seed=seed)
    if scheme == "msgc":
        return SequentialGradientCoder(n, *params, seed=seed)
    raise ValueError(f"scheme must be 'gc', 'srsgc' or 'msgc', got {scheme!r}")


def chunk_slices(coder: Coder, batch: int) -> dict[tuple, slice]:
    """Lay the coder's data chunks (``chunk_units``) out on a batch of ``batch`` samples, in proportion to their
    units: the samples whose gradients make each chunk of one job."""
    units = coder.chunk_units()
    total = sum(u for _, u in units)
    out, acc = {}, 0
    for key, u in units:
        start = round(acc * batch / total)
        acc += u
        out[key] = slice(start, round(acc * batch / total))
    return out
