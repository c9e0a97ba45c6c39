"""Sarathi-Serve's stall-free scheduler (Agrawal et al., OSDI'24, arXiv 2403.02310).

Rule (``sarathi/core/scheduler/sarathi_scheduler.py`` of microsoft/sarathi-serve): each step has a token budget
(``max_num_batched_tokens``, the paper's chunk size, decodes included). Running requests are taken in FCFS order:

1. every running request past its prefill decodes one token; when no slot can be appended, the lowest-priority
   running request is preempted (recompute), or the request itself when none is left. Decodes are never stalled;
2. running requests with a partly computed prompt continue with ``min(remaining, budget left)`` tokens;
3. waiting requests are admitted FCFS (all prompt blocks allocated up front, watermark kept free) while the
   budget lasts and fewer than ``max_num_seqs`` run, the first that does not fit stopping admission.

With ``dynamic_chunking`` a request's budget comes from its stage in a schedule falling linearly from
``high_chunk_size`` to ``low_chunk_size`` (rounded to multiples of 32) over ``chunk_schedule_max_tokens`` prompt
tokens: big chunks while attention is cheap, smaller ones later (past it, prompts keep the smallest size; the
reference asserts instead).
"""

from __future__ import annotations

from thrifty.serve.kv.block_manager import BlockManager
from thrifty.serve.sched.base import Scheduler, SchedulerConfig, SchedulerOutput
from thrifty.serve.sequence import Request

__all__ = ["SarathiServeScheduler", "dynamic_chunk_sizes"]


def dynamic_chunk_sizes(low: int, high: int, stages: int) -> list[int]:
    """Sarathi-Serve's chunk schedule: ``stages`` sizes from ``high`` down to ``low``, rounded to multiples of
    ``min(32, low)``."""
    if stages == 1:
        sizes = [float(low)]
    else:
        sizes = [int(low + (high - low) * i / (stages - 1)) for i in range(stages)]
    unit = min(32, low)
    return [max(unit, int(round(s / unit)) * unit) for s in reversed(sizes)]


class SarathiServeScheduler(Scheduler):
    """Stall-free batching under a token budget. Reads ``max_num_batched_tokens``, ``max_num_seqs`` and the dynamic
    chunking fields of :class:`SchedulerConfig`; the watermark lives in the block manager."""

    name = "sarathi_serve"

    def __init__(self, block_manager: BlockManager, config: SchedulerConfig | None = None) -> None:
        super().__init__(block_manager, config)
        cfg = self.config
        if cfg.dynamic_chunking:
            self._chunk_sizes = dynamic_chunk_sizes(cfg.low_chunk_size, cfg.high_chunk_size, cfg.chunk_schedule_stages)
            self._tokens_per_stage = -(-cfg.chunk_schedule_max_tokens // cfg.chunk_schedule_stages)
            if max(self._chunk_sizes) > cfg.max_num_batched_tokens:
                raise ValueError(
                    f"high_chunk_size {cfg.high_chunk_size} exceeds the token budget {cfg.max_num_batched_tokens}"
                )
            if cfg.max_num_seqs > min(self._chunk_sizes):
                raise ValueError(
                    f"max_num_seqs {cfg.max_num_seqs} exceeds the smallest dynamic chunk {min(self._chunk_sizes)}: "
                    "the running decodes alone could overrun a step's budget"
                )

    def chunk_budget(self, req: Request) -> int:
        """Token budget of the step that continues ``req``'s prefill (its dynamic stage's size, or the budget)."""
        if not self.config.dynamic_chunking:
            return self.config.max_num_batched_tokens
        stage = min(req.num_computed_tokens // self._tokens_per_stage, len(self._chunk_sizes) - 1)
        return self._chunk_sizes[stage]

    def _schedule(self, now: float) -> SchedulerOutput:
        out = SchedulerOutput()
        bm = self.block_manager
        self._decode_running(out)
        num_batched = out.num_batched_tokens
        prefills = [r for r in self.running if r.is_prefilling]
        for req in prefills:
            n = min(req.remaining_prefill, self.chunk_budget(req) - num_batched)
            if n > 0:
                out.chunks.append(self._chunk(req, n))
                num_batched += n
        while self.waiting:
            req = self.waiting[0]
            if len(self.running) >= self.config.max_num_seqs or not bm.can_allocate(req):
                break
            if self.chunk_budget(req) - num_batched <= 0:
                break
            self._admit(req)
            n = min(req.remaining_prefill, self.chunk_budget(req) - num_batched)
            if n <= 0:
                break
            out.chunks.append(self._chunk(req, n))
            num_batched += n
        return out
