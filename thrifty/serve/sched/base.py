"""The scheduler interface shared by every policy, the real engine and the simulator.

A scheduler decides, each step, which requests compute how many tokens; it returns a plain
:class:`SchedulerOutput` (no tensors). An executor (the engine or the simulator) computes, for every
:class:`ScheduledChunk`, the tokens ``[start, start + num_tokens)`` of ``chunk.request`` into the blocks of its
``block_table``, samples one token for every chunk with ``chunk.sample`` set, and calls :meth:`Scheduler.update`.

Executors must read everything from ``chunk.request``: a chunk may belong to a request the caller never added
(BatchLLM computes each group's shared prefix as an internal request whose chunks never sample).
"""

from __future__ import annotations

import abc
import itertools
from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from thrifty.serve.kv.block_manager import BlockManager
from thrifty.serve.sequence import Request, RequestStatus

__all__ = ["ScheduledChunk", "Scheduler", "SchedulerConfig", "SchedulerOutput"]


@dataclass(frozen=True)
class ScheduledChunk:
    """Compute tokens ``[start, start + num_tokens)`` of ``request``; sample the next token iff ``sample``."""

    request: Request
    num_tokens: int
    start: int
    sample: bool

    @property
    def request_id(self) -> str:
        return self.request.request_id

    @property
    def end(self) -> int:
        return self.start + self.num_tokens

    @property
    def is_decode(self) -> bool:
        """A single token that yields the next one (a decode step)."""
        return self.num_tokens == 1 and self.sample


@dataclass
class SchedulerOutput:
    """One step's schedule: the chunks to compute and the requests preempted (their blocks freed) this step."""

    chunks: list[ScheduledChunk] = field(default_factory=list)
    preempted: list[str] = field(default_factory=list)

    @property
    def num_batched_tokens(self) -> int:
        return sum(c.num_tokens for c in self.chunks)

    @property
    def num_prefill_tokens(self) -> int:
        return sum(c.num_tokens for c in self.chunks if not c.is_decode)

    @property
    def num_decodes(self) -> int:
        return sum(1 for c in self.chunks if c.is_decode)

    @property
    def num_prefills(self) -> int:
        return sum(1 for c in self.chunks if not c.is_decode)

    @property
    def is_empty(self) -> bool:
        return not self.chunks

    def __len__(self) -> int:
        return len(self.chunks)


@dataclass
class SchedulerConfig:
    """Knobs of the policies (each policy's docstring says which it reads).

    Attributes:
        max_num_batched_tokens: token budget of one step (Sarathi-Serve's ``chunk_size``: decodes included).
        max_num_seqs: most requests running at once (batch size cap).
        chunk_size: SARATHI's prefill chunk C (``None``: the token budget minus one slot per other running request).
        dynamic_chunking: Sarathi-Serve's dynamic chunk schedule: a prompt's budget falls from
            ``high_chunk_size`` to ``low_chunk_size`` in ``chunk_schedule_stages`` stages over its first
            ``chunk_schedule_max_tokens`` tokens (rounded to multiples of 32).
        kv_admission_threshold: BatchLLM admits requests while their projected KV blocks stay under this fraction of
            the pool.
    """

    max_num_batched_tokens: int = 512
    max_num_seqs: int = 128
    chunk_size: int | None = None
    dynamic_chunking: bool = False
    high_chunk_size: int = 2048
    low_chunk_size: int = 512
    chunk_schedule_max_tokens: int = 131072
    chunk_schedule_stages: int = 16
    kv_admission_threshold: float = 0.95

    def __post_init__(self) -> None:
        if self.max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens must be >= 1, got {self.max_num_batched_tokens}")
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1 or None, got {self.chunk_size}")
        if self.dynamic_chunking:
            if not 1 <= self.low_chunk_size <= self.high_chunk_size:
                raise ValueError(
                    f"dynamic chunking needs 1 <= low_chunk_size <= high_chunk_size, got "
                    f"{self.low_chunk_size}, {self.high_chunk_size}"
                )
            if self.chunk_schedule_stages < 1 or self.chunk_schedule_max_tokens < 1:
                raise ValueError("chunk_schedule_stages and chunk_schedule_max_tokens must be >= 1")
        if not 0.0 < self.kv_admission_threshold <= 1.0:
            raise ValueError(f"kv_admission_threshold must lie in (0, 1], got {self.kv_admission_threshold}")


class Scheduler(abc.ABC):
    """Base of every policy: request queues, admission checks, preemption by recompute and the ``update`` step.

    Subclasses implement :meth:`_schedule`. ``waiting`` is FCFS (preempted requests go back to its front);
    ``running`` holds admitted requests (they hold blocks), kept in FCFS priority order (arrival, then add order).
    """

    name: str = ""
    # True for policies that prefill a whole prompt in one step (no chunking): their token budget must hold the
    # longest sequence, so callers give them the model's context as budget (the engine's CLI, the simulator)
    prefills_whole_prompts: bool = False

    def __init__(self, block_manager: BlockManager, config: SchedulerConfig | None = None) -> None:
        self.block_manager = block_manager
        self.config = config if config is not None else SchedulerConfig()
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.requests: dict[str, Request] = {}
        self._order: dict[str, int] = {}
        self._counter = itertools.count()
        self.num_preemptions = 0
        self.num_steps = 0
        if self.config.max_num_seqs > self.config.max_num_batched_tokens:
            raise ValueError(
                f"max_num_seqs {self.config.max_num_seqs} exceeds max_num_batched_tokens "
                f"{self.config.max_num_batched_tokens}: the running decodes alone could overrun the token budget"
            )

    # ------------------------------------------------------------------ requests
    def add_request(self, req: Request) -> None:
        """Queue a request; reject one that could never fit in the KV pool (it would wait forever)."""
        if req.request_id in self.requests:
            raise ValueError(f"request id {req.request_id!r} is already scheduled")
        if req.status is not RequestStatus.WAITING or req.block_table or req.num_computed_tokens:
            raise ValueError(f"request {req.request_id!r} is not fresh ({req.status.value})")
        self.check_fits(req)
        self.requests[req.request_id] = req
        self._order[req.request_id] = next(self._counter)
        self.waiting.append(req)

    def check_fits(self, req: Request) -> None:
        """Raise ``ValueError`` if the request could never run to ``max_tokens``: its KV (prompt plus outputs) must
        fit the pool minus the watermark (so that it can be admitted again after a preemption), and policies that
        prefill whole sequences need them to fit the token budget."""
        bm = self.block_manager
        usable = bm.num_blocks - bm.watermark_blocks
        num_kv = req.num_prompt_tokens + req.max_tokens - 1
        if bm.blocks_for(num_kv) > usable:
            raise ValueError(
                f"request {req.request_id!r} needs up to {num_kv} KV slots ({bm.blocks_for(num_kv)} blocks of "
                f"{bm.block_size}) but the KV pool admits {usable} blocks ({bm.num_blocks} less the watermark): "
                "shorten the prompt or max_tokens, or give the cache more blocks"
            )
        longest = self.max_prefill_tokens(req)
        if longest is not None and longest > self.config.max_num_batched_tokens:
            raise ValueError(
                f"request {req.request_id!r}: {self.name} prefills whole sequences of up to {longest} tokens at once, "
                f"over max_num_batched_tokens {self.config.max_num_batched_tokens}: raise the budget or use a "
                "chunking policy (sarathi, sarathi_serve)"
            )

    def max_prefill_tokens(self, req: Request) -> int | None:
        """The longest single prefill chunk this policy may need for ``req`` (``None``: it chunks prefills)."""
        return None

    def abort(self, request_id: str, now: float | None = None) -> Request | None:
        """Finish a request with reason ``"abort"`` in any state, freeing its blocks; ``None`` if unknown (or
        already finished). ``now`` becomes its ``finish_time``."""
        req = self.requests.get(request_id)
        if req is None:
            return None
        if req.status is RequestStatus.WAITING:
            self.waiting.remove(req)
        else:
            self.running.remove(req)
        self._finish(req, "abort", now)
        return req

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    @property
    def num_unfinished(self) -> int:
        return len(self.waiting) + len(self.running)

    def priority(self, req: Request) -> tuple[float, int]:
        """FCFS priority key (smaller runs first)."""
        return (req.arrival_time, self._order.get(req.request_id, -1))

    # ------------------------------------------------------------------ stepping
    def schedule(self, now: float = 0.0) -> SchedulerOutput:
        """Decide this step's chunks (and preemptions). Every policy schedules at least one chunk while requests are
        unfinished (``add_request`` rejects what could never run; the property tests check it)."""
        out = self._schedule(now)
        budget = self.config.max_num_batched_tokens
        if out.num_batched_tokens > budget:
            raise AssertionError(f"{self.name} scheduled {out.num_batched_tokens} tokens over the budget {budget}")
        for chunk in out.chunks:
            if chunk.request.first_scheduled_time is None:
                chunk.request.first_scheduled_time = now
        self.num_steps += 1
        return out

    @abc.abstractmethod
    def _schedule(self, now: float) -> SchedulerOutput: ...

    def update(
        self,
        output: SchedulerOutput,
        sampled: Mapping[str, int],
        stopped: Collection[str] = (),
        now: float = 0.0,
    ) -> list[Request]:
        """Apply a computed step: advance ``num_computed_tokens``, append each sampled token, finish requests that
        reached ``max_tokens`` or are in ``stopped`` (EOS or stop string, decided by the executor), free their
        blocks. Returns the requests finished by this step (aborted ones are skipped)."""
        finished: list[Request] = []
        for chunk in output.chunks:
            req = chunk.request
            if req.status is RequestStatus.FINISHED:
                continue
            if req.num_computed_tokens != chunk.start:
                raise RuntimeError(
                    f"request {req.request_id!r} changed since it was scheduled "
                    f"(computed {req.num_computed_tokens}, chunk starts at {chunk.start})"
                )
            req.num_computed_tokens += chunk.num_tokens
            self._on_computed(req)
            if not chunk.sample:
                continue
            try:
                token = sampled[req.request_id]
            except KeyError:
                raise KeyError(f"no sampled token for {req.request_id!r}, whose chunk ends its known tokens") from None
            req.output_token_ids.append(int(token))
            req.token_times.append(now)
            if req.first_token_time is None:
                req.first_token_time = now
            if req.request_id in stopped:
                reason = "stop"
            elif req.num_output_tokens >= req.max_tokens:
                reason = "length"
            else:
                continue
            self.running.remove(req)
            self._finish(req, reason, now)
            finished.append(req)
        return finished

    # ------------------------------------------------------------------ helpers for policies
    def _on_computed(self, req: Request) -> None:
        """Hook after a request's KV advanced: register its newly full blocks for prefix caching."""
        self.block_manager.cache_blocks(req)

    def _finish(self, req: Request, reason: str, now: float | None) -> None:
        self.block_manager.free(req)
        req.status = RequestStatus.FINISHED
        req.finish_reason = reason
        req.finish_time = now
        del self.requests[req.request_id]
        self._order.pop(req.request_id, None)

    def _preempt(self, req: Request, out: SchedulerOutput) -> None:
        """Preemption by recompute: free all blocks, forget computed KV, put the request at the waiting front."""
        self.running.remove(req)
        self.block_manager.free(req)
        req.num_computed_tokens = 0
        req.num_cached_tokens = 0
        req.status = RequestStatus.WAITING
        req.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(req)
        out.preempted.append(req.request_id)

    def _admit(self, req: Request, num_tokens: int | None = None) -> None:
        """Move the head of ``waiting`` to ``running`` with its blocks (prefix hits set ``num_computed_tokens``)."""
        head = self.waiting.popleft()
        assert head is req
        self.block_manager.allocate(req, num_tokens)
        req.status = RequestStatus.RUNNING
        self.running.append(req)

    def _decode_running(self, out: SchedulerOutput) -> None:
        """Schedule one decode token for every running request past its prefill, in FCFS order. When no slot can be
        appended, preempt the lowest-priority running request not yet visited (or the request itself when none is
        left), as vLLM and Sarathi-Serve do."""
        bm = self.block_manager
        self._sort_running()
        queue = deque(self.running)
        while queue:
            req = queue.popleft()
            if req.is_prefilling:
                continue
            while not bm.can_append_slots(req, 1):
                victim = queue.pop() if queue else req
                self._preempt(victim, out)
                if victim is req:
                    break
            else:
                bm.append_slots(req, 1)
                out.chunks.append(self._chunk(req, 1))

    def _sort_running(self) -> None:
        self.running.sort(key=self.priority)

    @staticmethod
    def _chunk(req: Request, num_tokens: int) -> ScheduledChunk:
        start = req.num_computed_tokens
        if not 0 < num_tokens <= req.num_tokens - start:
            raise AssertionError(f"bad chunk of {num_tokens} tokens for {req!r}")
        return ScheduledChunk(req, num_tokens, start, start + num_tokens == req.num_tokens)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(waiting={len(self.waiting)}, running={len(self.running)}, {self.config})"
